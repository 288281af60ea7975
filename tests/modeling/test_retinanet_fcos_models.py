"""model=retinanet_fpn, retinanet_fpn_v2 and fcos_fpn as models of this project: built on every
backbone= option, trained a few steps, exported (TorchScript, ONNX) equal to eager, run under
test-time augmentation, and their pieces (anchors with several sizes per level, P6/P7, FCOS
targets) doing what the references do."""
from __future__ import annotations

import pytest
import torch

from detector.config import load_config
from detector.modeling.anchor_generator import AnchorGenerator
from detector.modeling.build import build_model

DENSE_MODELS = ["retinanet_fpn", "retinanet_fpn_v2", "fcos_fpn"]
BACKBONES = ["resnet18", "resnet18_narrow", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
             "resnext101_32x8d"]


def tiny(name: str, *extra: str):
    """A narrow one-stage detector for 3 classes (ResNet-18 unless `extra` says otherwise)."""
    return load_config([f"model={name}", "backbone=resnet18", "model.num_classes=3", "model.fpn.out_channels=32",
                        "model.input.min_size_test=128", "model.input.max_size_test=160", *extra])


def targets():
    return [{"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0], [60.0, 5.0, 120.0, 40.0]]), "labels": torch.tensor([1, 3])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


def test_one_size_per_level_gives_the_anchors_it_gave_before():
    """Numbers and one-element lists are the same level; three sizes give torchvision's order."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
    from torchvision.models.detection.image_list import ImageList

    feature_sizes, image = [(16, 20), (8, 10), (4, 5)], (128, 160)
    single = AnchorGenerator([32, 64, 128], [0.5, 1.0, 2.0])([*feature_sizes], image)
    listed = AnchorGenerator([[32], [64], [128]], [0.5, 1.0, 2.0])([*feature_sizes], image)
    for a, b in zip(single, listed):
        assert torch.equal(a, b)
    sizes = [[32, 40, 50], [64, 80, 101], [128, 161, 203]]
    ours = AnchorGenerator(sizes, [0.5, 1.0, 2.0])(feature_sizes, image)
    reference = TorchvisionAnchors(tuple(tuple(s) for s in sizes), ((0.5, 1.0, 2.0),) * 3)
    features = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
    expected = reference(ImageList(torch.zeros(1, 3, *image), [image]), features)[0]
    assert torch.equal(torch.cat(ours), expected)
    assert AnchorGenerator(sizes, [0.5, 1.0, 2.0]).num_anchors_per_location == 9
    with pytest.raises(ValueError, match="same number of sizes"):
        AnchorGenerator([[32, 40], [64]], [1.0])


def test_one_size_per_level_keeps_retinanets_octave_scales():
    """model=retinanet_fpn's default anchors are torchvision's retinanet_resnet50_fpn sizes; a
    schedule that sets one size per level (schedule=shapes, schedule=auto) keeps its nine anchors
    per location, scaled from that size; a level given as a list is taken as it is (Detectron2)."""
    from torchvision.models.detection.retinanet import _default_anchorgen

    ours = build_model(tiny("retinanet_fpn", "schedule=1x")).anchor_generator   # shapes' schedule sets sizes
    assert ours.level_sizes == [list(map(float, s)) for s in _default_anchorgen().sizes]
    shapes = build_model(tiny("retinanet_fpn")).anchor_generator   # the default dataset: shapes, its schedule
    assert shapes.num_anchors_per_location == 9
    assert shapes.level_sizes[0] == [16.0, 20.0, 25.0] and shapes.level_sizes[4] == [256.0, 322.0, 406.0]
    listed = AnchorGenerator([[32, 32 * 2 ** (1 / 3)], [64, 64 * 2 ** (1 / 3)]], [1.0], octave_scales=[1.0, 3.0])
    assert listed.level_sizes[0] == [32.0, 32 * 2 ** (1 / 3)]
    rcnn = build_model(load_config(["model=faster_rcnn_fpn", "backbone=resnet18", "model.num_classes=3"]))
    assert rcnn.rpn.anchor_generator.num_anchors_per_location == 3   # R-CNN: no octave scales


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone(backbone):
    """Each model on each backbone= option: built (on the meta device: shapes only, no memory
    nor init cost) with the pyramid wired to that backbone's widths; RetinaNet also run on one
    backbone of each block kind (basic, bottleneck, grouped bottleneck)."""
    for name in DENSE_MODELS:
        with torch.device("meta"):
            model = build_model(tiny(name, f"backbone={backbone}"))
        body, fpn = model.backbone.body, model.backbone.fpn
        assert [conv[0].in_channels for conv in fpn.lateral_convs] == [body.out_channels[f] for f in ("res3", "res4", "res5")]
        assert fpn.p6.in_channels == (body.out_channels["res5"] if name == "retinanet_fpn_v2" else 32)
        assert fpn.strides == [8, 16, 32, 64, 128]
    if backbone not in ("resnet18", "resnet50", "resnext50_32x4d"):
        return
    torch.manual_seed(0)
    model = build_model(tiny("retinanet_fpn", f"backbone={backbone}")).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 100, 130)])[0]
        levels = list(model.backbone(torch.zeros(1, 3, 128, 160)).keys())
    assert levels == ["p3", "p4", "p5", "p6", "p7"]
    assert set(out) == {"boxes", "scores", "labels"} and out["boxes"].shape[1] == 4


@pytest.mark.parametrize("name", DENSE_MODELS)
def test_a_few_steps_train_and_lower_the_loss(name):
    torch.manual_seed(0)
    model = build_model(tiny(name)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    totals = []
    for _ in range(6):
        losses = model(images, targets())
        expected = {"loss_classifier", "loss_box_reg"} | ({"loss_centerness"} if name == "fcos_fpn" else set())
        assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert totals[-1] < totals[0], totals


def spread_logits_(reference) -> None:
    """Class logits of a few units instead of the prior's -4.6, at which the focal loss of an easy
    negative is ~1e-6: a wrong set of anchors in the loss then shows."""
    generator = torch.Generator().manual_seed(5)
    logits = reference.head.classification_head.cls_logits
    with torch.no_grad():
        logits.weight.copy_(torch.randn(logits.weight.shape, generator=generator) * 0.05)
        logits.bias.copy_(torch.randn(logits.bias.shape, generator=generator) - 1.0)


def test_fcos_targets_follow_torchvision():
    """Which points are positive for which box: torchvision's FCOS.compute_loss rules, compared
    through the losses both models compute on the same weights and targets."""
    from tests.modeling.test_retinanet_parity import converted
    import tempfile
    from pathlib import Path
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(0)
    reference = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=128)
    spread_logits_(reference)
    with tempfile.TemporaryDirectory() as folder:
        ours = converted(reference, Path(folder), ["backbone.norm=bn"])
    image_targets = targets()
    image_targets[1] = {"boxes": torch.tensor([[0.0, 0.0, 128.0, 128.0], [30.0, 30.0, 40.0, 44.0]]),
                        "labels": torch.tensor([2, 1])}
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    reference.train()
    ours.train()
    for module in list(reference.modules()) + list(ours.modules()):
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()   # the same (running) statistics in both
    want = reference(images, [dict(t) for t in image_targets])
    got = ours(images, [dict(t) for t in image_targets])
    # torchvision's focal loss also covers its never-positive background column (all points,
    # over the batch's positive count): taken out of its sum, as this head has no such column.
    from torchvision.ops import sigmoid_focal_loss

    with torch.no_grad():
        batch = reference.transform(images)[0].tensors
        features = list(reference.backbone(batch).values())
        background = reference.head.classification_head(features)[..., 0]
        anchors = ours.anchor_generator([f.shape[-2:] for f in features], (128, 128))
        positives = sum(int((ours.match(torch.cat(anchors), [len(a) for a in anchors], t["boxes"]) >= 0).sum())
                        for t in image_targets)
    extra = float(sigmoid_focal_loss(background, torch.zeros_like(background), reduction="sum")) / max(1, positives)
    assert positives > 10 and extra > 0.1
    torch.testing.assert_close(float(got["loss_classifier"]), float(want["classification"]) - extra, rtol=1e-4,
                               atol=1e-6)
    torch.testing.assert_close(got["loss_box_reg"], want["bbox_regression"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["loss_centerness"], want["bbox_ctrness"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_retinanet_losses_follow_torchvision(version, tmp_path):
    """Anchor matching, focal loss and the v1 L1 / v2 GIoU box loss: torchvision's losses on
    the same weights and targets (torchvision's 5 outputs include its background column)."""
    from tests.modeling.test_retinanet_parity import converted
    from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

    torch.manual_seed(0)
    factory = retinanet_resnet50_fpn if version == "v1" else retinanet_resnet50_fpn_v2
    reference = factory(weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=128)
    spread_logits_(reference)
    ours = converted(reference, tmp_path, ["backbone.norm=bn"])
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for model in (reference, ours):
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
    want = reference(images, targets())
    got = ours(images, targets())
    # torchvision also trains its never-positive background column: its focal loss there is
    # the extra term, removed here by taking it out of torchvision's sum.
    with torch.no_grad():
        head = reference.head.classification_head
        batch = reference.transform(images)[0].tensors
        logits = head(list(reference.backbone(batch).values()))[..., 0]
    from torchvision.ops import sigmoid_focal_loss
    from torchvision.ops import box_iou
    anchors = reference.anchor_generator(reference.transform(images)[0], list(reference.backbone(batch).values()))
    background = 0.0
    for image, target in enumerate(targets()):
        if target["boxes"].numel():
            matches = reference.proposal_matcher(box_iou(target["boxes"], anchors[image]))
        else:
            matches = torch.full((anchors[image].shape[0],), -1)
        valid = matches != -2
        count = max(1, int((matches >= 0).sum()))
        background += float(sigmoid_focal_loss(logits[image][valid], torch.zeros_like(logits[image][valid]),
                                                reduction="sum")) / count / 2
    torch.testing.assert_close(float(got["loss_classifier"]), float(want["classification"]) - background,
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["loss_box_reg"], want["bbox_regression"], rtol=1e-4, atol=1e-6)


def spread_scores_(model) -> None:
    """Class logits of a few units so that detections vary (the training init keeps every score at 0.01)."""
    torch.nn.init.normal_(model.head.cls_logits.weight, std=0.3)
    torch.nn.init.normal_(model.head.cls_logits.bias, mean=-2.0, std=0.5)
    if model.head.centerness is not None:
        torch.nn.init.normal_(model.head.centerness.weight, std=0.3)


@pytest.mark.parametrize("name", DENSE_MODELS)
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_eager(name, fmt, tmp_path):
    from tests.export.test_masks import SIZES, load_torchscript, sample_images
    from tests.modeling.test_retinanet_parity import match_within
    from detector.export import ExportableDetector, example_image, export_onnx, export_torchscript

    torch.manual_seed(0)
    model = build_model(tiny(name, "model.postprocess.detections_per_img=30",
                             "model.postprocess.score_thresh=0.1")).eval()
    spread_scores_(model)
    wrapper = ExportableDetector(model)
    assert wrapper.output_names == ("boxes", "scores", "labels")
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    (export_onnx if fmt == "onnx" else export_torchscript)(wrapper, example_image(), path)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run = lambda image: session.run(None, {"image": image.numpy()})   # noqa: E731
    else:
        run = load_torchscript(path)
    counts = []
    for image in sample_images():
        with torch.no_grad():
            expected = model([image])[0]
        boxes, scores, labels = (torch.as_tensor(x) for x in run(image))
        counts.append(len(scores))
        assert len(scores) == len(expected["scores"]) > 0 and labels.dtype == torch.int64
        # Near-tied scores may swap ranks: each eager detection is paired with an exported one of
        # the same label, box within 1e-3 px and score within 1e-4.
        pairs = match_within(expected, {"boxes": boxes, "scores": scores, "labels": labels}, len(scores),
                             box_tol=1e-3, score_tol=1e-4)
        assert len(pairs) == len(scores), (fmt, name, tuple(image.shape), len(pairs), len(scores))
    assert len(counts) == len(SIZES)


@pytest.mark.parametrize("name", DENSE_MODELS)
def test_test_time_augmentation(name):
    from detector.evaluation.tta import tta_from_settings

    torch.manual_seed(0)
    cfg = tiny(name)
    model = build_model(cfg).eval()
    spread_scores_(model)
    tta = tta_from_settings(cfg.test, model)
    with torch.no_grad():
        single = model([torch.rand(3, 120, 150)])[0]
        merged = tta([torch.rand(3, 120, 150)])[0]
    assert tta.nms_thresh == model.nms_thresh and tta.detections_per_img == model.detections_per_img
    assert set(merged) == {"boxes", "scores", "labels"} and len(merged["boxes"]) > 0 and len(single["boxes"]) > 0


@pytest.mark.parametrize("name", ["faster_rcnn_fpn", "retinanet_fpn", "fcos_fpn"])
def test_postprocess_keys_reach_every_model(name, tmp_path):
    """model.postprocess.<key> and model.roi_heads.<key> both set the node the model has, through
    load_model's overrides (which predict and export use); TTA reads the same values."""
    from omegaconf import OmegaConf

    from detector.evaluation.tta import tta_from_settings
    from detector.modeling.postprocess_keys import postprocess_key, postprocess_module
    from detector.weights.loading import load_model

    extra = ["model.roi_heads.fc_dim=32"] if name == "faster_rcnn_fpn" else []
    cfg = tiny(name, *extra)
    torch.save({"model": build_model(cfg).state_dict(), "iteration": 0,
                "config": OmegaConf.to_container(cfg, resolve=True)}, tmp_path / "model.pth")
    model = load_model(tmp_path / "model.pth", overrides=["model.postprocess.score_thresh=0.3",
                                                          "model.roi_heads.nms_thresh=0.4",
                                                          "model.postprocess.detections_per_img=7"])
    settings = postprocess_module(model)
    assert (settings.score_thresh, settings.nms_thresh, settings.detections_per_img) == (0.3, 0.4, 7)
    node = "roi_heads" if name == "faster_rcnn_fpn" else "postprocess"
    assert postprocess_key(model.config.model, "nms_thresh") == f"model.{node}.nms_thresh"
    assert model.config.model[node].detections_per_img == 7
    tta = tta_from_settings(model.config.test, model)
    assert (tta.nms_thresh, tta.detections_per_img) == (0.4, 7)
