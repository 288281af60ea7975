"""Published weights by name (detector/weights/zoo.py), offline.

Nothing here touches the network: TORCH_HOME points at a temporary folder, and the
downloader is replaced by one that records its call and fails. Random-weight files are
planted under the names the publishers use. Their hashes are not the published ones, so
the "planted file used" tests substitute the planted file's own hash prefix in the
registry entry; the "hash mismatch" tests keep the published one.

The planted networks are ResNet-18s with narrow heads (the layout is read off the weights),
except the MSRA backbone, whose point is the bottleneck's Caffe2 names.
"""
import dataclasses
import hashlib
import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FrozenBatchNorm2d

from detector.modeling.build import build_model
from detector.weights.loading import load_initial_weights, load_model
from detector.weights.weight_settings import adopt_weight_settings
from detector.weights import zoo
from detector.weights.conversion import detectron2_source
from detector.weights.conversion.caffe2_resnet import FROZEN_BN_EPS
from detector.weights.conversion.detectron2_conversion import detectron2_key_to_ours

FPN_DIM, FC_DIM = 32, 64
TV_DETECTOR = "torchvision://fasterrcnn_resnet50_fpn"
TV_BACKBONE = "torchvision://resnet18"
D2_DETECTOR = "detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x"
D2_BACKBONE = "detectron2://ImageNetPretrained/MSRA/R-50"


def build_with_weights(cfg):
    """A run's model: built from cfg, then the starting weights it names loaded."""
    model = build_model(cfg)
    load_initial_weights(model, cfg)
    return model


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and a downloader that fails; returns the list of its calls."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls = []

    def offline(url, destination):
        calls.append((url, destination))
        raise URLError("network disabled in tests")

    monkeypatch.setattr(zoo, "_download", offline)
    return calls


def plant(name: str, data: bytes) -> "Path":  # noqa: F821
    path = zoo.cached_file(zoo.lookup(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def accept_planted(monkeypatch, name: str, data: bytes) -> None:
    """Registry entry for `name` with the planted file's hash in place of the publisher's."""
    original = zoo.find_published

    def find_published(value):
        found = original(value)
        if found is None or found[1].name != original(name)[1].name or found[1].hash_algorithm is None:
            return found
        source, entry = found
        digest = hashlib.new(entry.hash_algorithm, data).hexdigest()
        return source, dataclasses.replace(entry, hash_prefix=digest[: len(entry.hash_prefix)])

    monkeypatch.setattr(zoo, "find_published", find_published)


def torch_bytes(state) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def small_overrides(*extra):
    return ["backbone=resnet18", "model.num_classes=2", f"model.fpn.out_channels={FPN_DIM}",
            f"model.roi_heads.fc_dim={FC_DIM}", *extra]


# ---------------------------------------------------------------- torchvision detector
def torchvision_detector_state() -> dict:
    """torchvision's Faster R-CNN layout (COCO's 91 outputs) on a ResNet-18 with narrow heads."""
    torch.manual_seed(0)
    body = torchvision.models.resnet18(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [64, 128, 256, 512], FPN_DIM)
    model = FasterRCNN(backbone, num_classes=None, box_head=TwoMLPHead(FPN_DIM * 49, FC_DIM),
                       box_predictor=FastRCNNPredictor(FC_DIM, 91))
    return {k: v for k, v in model.state_dict().items()}


def torchvision_detection_key_to_ours(key: str) -> str:
    key = key.replace("backbone.fpn.inner_blocks.", "backbone.fpn.lateral_convs.")
    key = key.replace("backbone.fpn.layer_blocks.", "backbone.fpn.output_convs.")
    key = key.replace("rpn.head.conv.0.0.", "rpn.head.convs.0.").replace("rpn.head.cls_logits.", "rpn.head.objectness.")
    key = key.replace("rpn.head.bbox_pred.", "rpn.head.deltas.")
    return key.replace("box_head.fc6.", "box_head.fc1.").replace("box_head.fc7.", "box_head.fc2.")


def test_torchvision_detector_planted_file_is_used(hub, monkeypatch):
    planted = torchvision_detector_state()
    data = torch_bytes(planted)
    raw = plant(TV_DETECTOR, data)
    accept_planted(monkeypatch, TV_DETECTOR, data)

    model = load_model(TV_DETECTOR)
    ours = model.state_dict()
    for key, value in planted.items():
        assert torch.equal(ours[torchvision_detection_key_to_ours(key)], value), key
    assert model.config.model.num_classes == 90 and model.config.model.class_names[0] == "person"
    assert hub == []   # the planted file was used: no download was tried
    converted = sorted(raw.parent.glob("fasterrcnn_resnet50_fpn_coco-258fb6c6.detector-v1-*.pth"))
    assert [p.name for p in converted] == [f"{raw.stem}.detector-v1-{hashlib.sha256(data).hexdigest()[:12]}.pth"]

    # The conversion is cached: a second use reads it instead of converting again.
    monkeypatch.setattr(zoo, "convert_file", lambda *a: pytest.fail("converted twice"))
    assert zoo.resolve_weights(TV_DETECTOR) == converted[0]


def test_torchvision_detector_hash_mismatch_is_refused(hub):
    raw = plant(TV_DETECTOR, b"not the published file")
    with pytest.raises(zoo.PublishedWeightsError) as error:
        load_model(TV_DETECTOR)
    message = str(error.value)
    assert str(raw) in message and "sha256" in message and "258fb6c6" in message
    assert "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in message
    assert raw.is_file(), "a file the user placed is never deleted"
    assert not list(raw.parent.glob("*.detector-*")), "nothing was converted"


def test_torchvision_detector_missing_file_names_url_and_path(hub, tmp_path):
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    url = "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    with pytest.raises(zoo.PublishedWeightsError) as error:
        load_model(TV_DETECTOR)
    message = str(error.value)
    assert url in message and str(expected) in message and "\n" not in message
    assert hub == [(url, expected)]


def test_fasterrcnn_v2_is_its_own_file(hub, tmp_path):
    with pytest.raises(zoo.PublishedWeightsError) as error:
        load_model("torchvision://fasterrcnn_resnet50_fpn_v2")
    assert "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth" in str(error.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth") in str(error.value)


# ---------------------------------------------------------------- torchvision backbone
def randomized_norm_resnet18() -> dict:
    """A torchvision resnet18 state dict whose BatchNorm tensors are random, distinct per layer
    and channel (a fresh model's are 1/0/0/1 everywhere, so a norm loaded into the wrong layer
    would still compare equal)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low in ((module.weight, 0.5), (module.bias, -0.5), (module.running_mean, -0.5),
                                    (module.running_var, 0.5)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + low)
    return model.state_dict()


def test_torchvision_backbone_planted_file_is_used(hub, monkeypatch):
    planted = randomized_norm_resnet18()
    norms = [v for k, v in planted.items() if ("bn" in k or ".downsample.1." in k) and v.is_floating_point()]
    assert len(norms) == 80   # 20 norms x (weight, bias, running_mean, running_var)
    # Any two norm tensors of one shape differ at every channel: loaded in each other's place, they show.
    assert all((a != b).all() for i, a in enumerate(norms) for b in norms[i + 1:] if a.shape == b.shape)
    data = torch_bytes(planted)
    plant(TV_BACKBONE, data)
    accept_planted(monkeypatch, TV_BACKBONE, data)

    from detector.config import load_config

    model = build_with_weights(load_config(small_overrides(f"backbone.weights={TV_BACKBONE}")))
    body = model.backbone.body.state_dict()
    compared = [k for k in planted if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert len(compared) == 100   # every conv and norm tensor of a ResNet-18 body
    for key in compared:
        assert torch.equal(body[key], planted[key]), key
    # The explicit version names the same file (V1 is the default).
    assert zoo.resolve_weights(f"{TV_BACKBONE}.IMAGENET1K_V1") == zoo.resolve_weights(TV_BACKBONE)
    assert hub == []


def test_torchvision_backbone_hash_mismatch_is_refused(hub):
    raw = plant(TV_BACKBONE, b"\0" * 100)
    from detector.config import load_config

    with pytest.raises(zoo.PublishedWeightsError, match="f37072fd") as error:
        build_with_weights(load_config(small_overrides(f"backbone.weights={TV_BACKBONE}")))
    assert str(raw) in str(error.value)


def test_torchvision_backbone_missing_file_names_url_and_path(hub, tmp_path):
    """V2 is selected by name and is a different file."""
    from detector.config import load_config

    url = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(zoo.PublishedWeightsError) as error:
        build_with_weights(load_config(small_overrides("backbone.weights=torchvision://resnet50.IMAGENET1K_V2")))
    assert url in str(error.value) and str(expected) in str(error.value)
    assert hub == [(url, expected)]


def test_names_of_the_wrong_kind_say_where_they_go(hub):
    with pytest.raises(zoo.PublishedWeightsError, match="backbone.weights=torchvision://resnet50"):
        load_model("torchvision://resnet50")
    with pytest.raises(zoo.PublishedWeightsError, match="Known names: torchvision://fasterrcnn_resnet50_fpn"):
        load_model("torchvision://resnet51")
    with pytest.raises(zoo.PublishedWeightsError, match="torchvision://resnet18.IMAGENET1K_V1"):
        zoo.lookup("torchvision://resnet18.IMAGENET1K_V2")
    assert hub == []


# ---------------------------------------------------------------- detectron2 detector
# Detectron2's box-loss betas, from its own defaults: detectron2/config/defaults.py (commit
# 084acd0f781f217e8d7b93a0099b08fce82cd88f) line 222 `_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0` and line 296
# `_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0`, which configs/Base-RCNN-FPN.yaml and the model-zoo
# R-CNN configs built on it (Misc/cascade_mask_rcnn_*, *_gn, *_syncbn included) leave alone.
# (Its RetinaNet's MODEL.RETINANET.SMOOTH_L1_LOSS_BETA is 0.1; no RetinaNet converts here yet.)
DETECTRON2_RPN_SMOOTH_L1_BETA = 0.0
DETECTRON2_ROI_BOX_HEAD_SMOOTH_L1_BETA = 0.0


def assert_detectron2_box_losses(model) -> None:
    """The converted config and the modules built from it train with Detectron2's betas; at 0
    torch's smooth_l1_loss is plain L1 (checked in test_detectron2_box_losses_at_beta_zero_are_l1)."""
    cfg = model.config.model
    assert cfg.rpn.smooth_l1_beta == DETECTRON2_RPN_SMOOTH_L1_BETA
    assert cfg.roi_heads.smooth_l1_beta == DETECTRON2_ROI_BOX_HEAD_SMOOTH_L1_BETA
    assert model.rpn.smooth_l1_beta == DETECTRON2_RPN_SMOOTH_L1_BETA
    assert model.roi_heads.smooth_l1_beta == DETECTRON2_ROI_BOX_HEAD_SMOOTH_L1_BETA


def detectron2_r18_fpn_weights() -> dict:
    """Detectron2's model-zoo names on a ResNet-18 layout with narrow heads, random values."""
    rng = np.random.default_rng(0)
    shapes = {"backbone.bottom_up.stem.conv1.weight": (64, 3, 7, 7)}
    norm = ("weight", "bias", "running_mean", "running_var")
    shapes.update({f"backbone.bottom_up.stem.conv1.norm.{s}": (64,) for s in norm})
    in_channels = 64
    for stage, channels in zip((2, 3, 4, 5), (64, 128, 256, 512)):
        for block in range(2):
            prefix = f"backbone.bottom_up.res{stage}.{block}"
            convs = {"conv1": (channels, in_channels, 3, 3), "conv2": (channels, channels, 3, 3)}
            if in_channels != channels:
                convs["shortcut"] = (channels, in_channels, 1, 1)
            for conv, shape in convs.items():
                shapes[f"{prefix}.{conv}.weight"] = shape
                shapes.update({f"{prefix}.{conv}.norm.{s}": (shape[0],) for s in norm})
            in_channels = channels
        shapes[f"backbone.fpn_lateral{stage}.weight"] = (FPN_DIM, channels, 1, 1)
        shapes[f"backbone.fpn_lateral{stage}.bias"] = (FPN_DIM,)
        shapes[f"backbone.fpn_output{stage}.weight"] = (FPN_DIM, FPN_DIM, 3, 3)
        shapes[f"backbone.fpn_output{stage}.bias"] = (FPN_DIM,)
    head = "proposal_generator.rpn_head"
    shapes.update({f"{head}.conv.weight": (FPN_DIM, FPN_DIM, 3, 3), f"{head}.conv.bias": (FPN_DIM,),
                   f"{head}.objectness_logits.weight": (3, FPN_DIM, 1, 1), f"{head}.objectness_logits.bias": (3,),
                   f"{head}.anchor_deltas.weight": (12, FPN_DIM, 1, 1), f"{head}.anchor_deltas.bias": (12,),
                   "roi_heads.box_head.fc1.weight": (FC_DIM, FPN_DIM * 49), "roi_heads.box_head.fc1.bias": (FC_DIM,),
                   "roi_heads.box_head.fc2.weight": (FC_DIM, FC_DIM), "roi_heads.box_head.fc2.bias": (FC_DIM,),
                   "roi_heads.box_predictor.cls_score.weight": (81, FC_DIM), "roi_heads.box_predictor.cls_score.bias": (81,),
                   "roi_heads.box_predictor.bbox_pred.weight": (320, FC_DIM), "roi_heads.box_predictor.bbox_pred.bias": (320,)})
    weights = {k: rng.standard_normal(s).astype(np.float32) * 0.01 for k, s in shapes.items()}
    for key in weights:
        if key.endswith("running_var"):
            weights[key] = np.abs(weights[key]) + 1.0
    return weights


def test_detectron2_detector_planted_file_is_used(hub, monkeypatch):
    planted = detectron2_r18_fpn_weights()
    data = pickle.dumps({"model": planted, "__author__": "Detectron2 Model Zoo"}, protocol=2)
    plant(D2_DETECTOR, data)
    accept_planted(monkeypatch, D2_DETECTOR, data)

    model = load_model(D2_DETECTOR)
    ours = model.state_dict()
    for key, value in planted.items():
        assert np.array_equal(ours[detectron2_key_to_ours(key)].numpy(), value), key
    assert torch.equal(ours["backbone.body.layer2.0.downsample.0.weight"],
                       torch.from_numpy(planted["backbone.bottom_up.res3.0.shortcut.weight"]))
    assert model.config.model.input.format == "BGR" and model.config.model.class_names[-1] == "toothbrush"
    assert_detectron2_box_losses(model)
    assert hub == []


def test_detectron2_box_losses_at_beta_zero_are_l1():
    """Beta 0 is numerically sound: torch's smooth_l1_loss is then exactly L1 (no 0.5 * x^2 / beta
    branch to divide by zero), its gradient the sign, 0 where prediction and target agree."""
    from detector.modeling.losses import box_regression_loss

    pred = torch.tensor([[0.5, -2.0, 0.0, 1e-8], [3.0, 0.1, -0.1, 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0]])
    loss = box_regression_loss(pred, target, "smooth_l1", DETECTRON2_RPN_SMOOTH_L1_BETA)
    loss.backward()
    assert loss.item() == pytest.approx((pred - target).abs().sum().item(), abs=1e-7)
    assert torch.equal(pred.grad, torch.sign(pred - target).detach())


def test_detectron2_detector_hash_mismatch_is_refused(hub):
    """Detectron2's model-zoo file names carry an md5 prefix (MODEL_ZOO.md)."""
    raw = plant(D2_DETECTOR, pickle.dumps({"model": {}}))
    with pytest.raises(zoo.PublishedWeightsError) as error:
        load_model(D2_DETECTOR)
    assert "md5" in str(error.value) and "280758" in str(error.value) and str(raw) in str(error.value)


def test_detectron2_detector_missing_file_names_url_and_path(hub, tmp_path):
    url = ("https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/"
           "model_final_280758.pkl")
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "model_final_280758.pkl"
    with pytest.raises(zoo.PublishedWeightsError) as error:
        load_model(D2_DETECTOR)
    assert url in str(error.value) and str(expected) in str(error.value)
    assert hub == [(url, expected)]


# ---------------------------------------------------------------- detectron2 backbone
def msra_r50_blobs() -> dict:
    """Caffe2 blob names of an MSRA ResNet-50 (fused norms: scale _s and shift _b only), plus
    the classifier and solver blobs a real file carries."""
    blobs = {"conv1_w": (64, 3, 7, 7), "res_conv1_bn_s": (64,), "res_conv1_bn_b": (64,),
             "fc1000_w": (1000, 2048), "fc1000_b": (1000,)}
    in_channels = 64
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        width = 64 * 2 ** (stage - 2)
        for block in range(blocks):
            convs = {"2a": (width, in_channels, 1, 1), "2b": (width, width, 3, 3), "2c": (width * 4, width, 1, 1)}
            if block == 0:
                convs["1"] = (width * 4, in_channels, 1, 1)
            for branch, shape in convs.items():
                blobs[f"res{stage}_{block}_branch{branch}_w"] = shape
                blobs[f"res{stage}_{block}_branch{branch}_bn_s"] = (shape[0],)
                blobs[f"res{stage}_{block}_branch{branch}_bn_b"] = (shape[0],)
            in_channels = width * 4
    # A distinct constant per blob (cheaper than 25M random draws): any mix-up of blobs shows.
    values = {k: np.full(s, (i + 1) * 1e-3, np.float32) for i, (k, s) in enumerate(blobs.items())}
    values["conv1_w_momentum"] = np.zeros((64, 3, 7, 7), np.float32)
    return values


def test_detectron2_backbone_planted_file_is_used(hub):
    """The MSRA files carry no published hash: the planted file is used as it is."""
    planted = msra_r50_blobs()
    plant(D2_BACKBONE, pickle.dumps(planted, protocol=2))
    from detector.config import load_config

    cfg = load_config(small_overrides("backbone=resnet50", f"backbone.weights={D2_BACKBONE}"))
    with pytest.raises(ValueError, match="backbone.stride_in_1x1=true model.input.format=BGR"):
        build_with_weights(cfg)   # MSRA's stride and BGR input are not the config's: refused, with the fix
    assert set(adopt_weight_settings(cfg)) == {"backbone.stride_in_1x1", "model.input.format",
                                               "model.input.pixel_mean", "model.input.pixel_std"}
    assert cfg.backbone.stride_in_1x1 is True and cfg.model.input.format == "BGR"
    assert list(cfg.model.input.pixel_std) == pytest.approx([1 / 255] * 3)
    model = build_with_weights(cfg)
    assert model.backbone.body.layer2[0].conv1.stride == (2, 2)   # MSRA strides in the 1x1 conv
    body = model.backbone.body.state_dict()
    assert torch.equal(body["conv1.weight"], torch.from_numpy(planted["conv1_w"]))
    assert torch.equal(body["bn1.weight"], torch.from_numpy(planted["res_conv1_bn_s"]))
    assert torch.equal(body["layer1.0.downsample.0.weight"], torch.from_numpy(planted["res2_0_branch1_w"]))
    assert torch.equal(body["layer3.5.conv3.weight"], torch.from_numpy(planted["res4_5_branch2c_w"]))
    assert torch.equal(body["layer4.2.bn2.bias"], torch.from_numpy(planted["res5_2_branch2b_bn_b"]))
    # A fused norm becomes exactly its published scale and shift under FrozenBatchNorm2d.
    assert torch.equal(body["layer2.1.bn1.running_mean"], torch.zeros(128))
    assert torch.allclose(body["layer2.1.bn1.running_var"] + FROZEN_BN_EPS, torch.ones(128), atol=0, rtol=1e-7)
    assert hub == []


def test_detectron2_backbone_hash_mismatch_is_refused(hub, monkeypatch):
    """Detectron2 gives no hash for the MSRA files; when an entry has one (the same check as
    for the model-zoo detectors), a file that differs is refused."""
    raw = plant(D2_BACKBONE, pickle.dumps({"conv1_w": np.zeros(3, np.float32)}))
    original = zoo.find_published

    def find_published(value):
        found = original(value)
        return found and (found[0], dataclasses.replace(found[1], hash_algorithm="md5", hash_prefix="0123ab"))

    monkeypatch.setattr(zoo, "find_published", find_published)
    from detector.config import load_config

    with pytest.raises(zoo.PublishedWeightsError, match="0123ab") as error:
        build_with_weights(load_config(small_overrides(f"backbone.weights={D2_BACKBONE}")))   # refused before any loading
    assert str(raw) in str(error.value)


def test_detectron2_backbone_missing_file_names_url_and_path(hub, tmp_path):
    url = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl"
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "R-101.pkl"
    from detector.config import load_config

    with pytest.raises(zoo.PublishedWeightsError) as error:
        # (the small ResNet-18 config: the name fails before any weights are compared with the model)
        build_with_weights(load_config(small_overrides("backbone.weights=detectron2://ImageNetPretrained/MSRA/R-101")))
    assert url in str(error.value) and str(expected) in str(error.value)
    assert hub == [(url, expected)]


# ---------------------------------------------------------------- downloads and tools
def test_a_bad_download_is_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def truncated(url, destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(b"truncated")

    monkeypatch.setattr(zoo, "_download", truncated)
    with pytest.raises(zoo.PublishedWeightsError, match="it was deleted"):
        zoo.resolve_weights(TV_BACKBONE)
    assert not zoo.cached_file(zoo.lookup(TV_BACKBONE)).exists()


def test_convert_tool_takes_a_name_and_reports_without_traceback(hub, tmp_path, capsys):
    from detector.cli.convert_weights import main

    status = main(["--source", "detectron2", "--input", D2_DETECTOR, "--output", str(tmp_path / "out.pth")])
    err = capsys.readouterr().err
    assert status != 0 and "Traceback" not in err
    assert err.startswith("error: ") and "model_final_280758.pkl" in err and "https://dl.fbaipublicfiles.com" in err
    status = main(["--source", "torchvision", "--input", D2_DETECTOR, "--output", str(tmp_path / "out.pth")])
    assert status != 0 and "use --source detectron2" in capsys.readouterr().err


def test_predict_and_classifier_take_names(hub, tmp_path):
    """Prediction resolves --weights names; the classifier's backbone.weights too."""
    from detector.tasks.prediction import predict_images
    from detector.weights.loading import classifier_state_from_file

    with pytest.raises(zoo.PublishedWeightsError, match="fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"):
        predict_images("torchvision://fasterrcnn_resnet50_fpn_v2", [], tmp_path / "out")
    with pytest.raises(zoo.PublishedWeightsError, match="resnet34-b627a593.pth"):
        classifier_state_from_file("torchvision://resnet34")
    assert [url for url, _ in hub] == ["https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
                                       "https://download.pytorch.org/models/resnet34-b627a593.pth"]


def test_predict_and_export_tools_report_a_missing_file_in_one_line(hub, tmp_path, capsys):
    from detector.cli.export import main as export_main
    from detector.cli.predict import main as predict_main

    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (32, 24)).save(image)
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "model_final_b275ba.pkl"
    name = "detectron2://COCO-Detection/faster_rcnn_R_50_FPN_1x"
    for tool, args in ((predict_main, ["--input", str(image), "--output", str(tmp_path / "out")]),
                       (export_main, ["--format", "onnx", "--output", str(tmp_path / "m.onnx")])):
        status = tool(["--weights", name, *args])
        err = capsys.readouterr().err
        assert status != 0 and "Traceback" not in err and err.count("\n") == 1
        assert str(expected) in err and "faster_rcnn_R_50_FPN_1x/137257794/model_final_b275ba.pkl" in err


def test_weights_settings_are_checked_before_any_work(tmp_path):
    assert zoo.weights_setting_problem("torchvision://resnet50.IMAGENET1K_V2") is None
    assert "Known names" in zoo.weights_setting_problem("detectron2://COCO-Detection/faster_rcnn_R_50_FPN_9x")
    assert "does not exist" in zoo.weights_setting_problem(tmp_path / "nothing.pth")
    from detector.config import load_config
    from detector.tasks.classification import validate_cls_config
    from detector.engine.config_checks import ConfigError

    cfg = load_config([f"data.root={tmp_path}", "backbone.weights=torchvision://resnet19"], config_name="cls")
    with pytest.raises(ConfigError, match="backbone.weights=torchvision://resnet19: Unknown published weights"):
        validate_cls_config(cfg)


def test_train_net_checks_and_eval_only_adopt_a_named_detector(hub, monkeypatch):
    """validate_config accepts a known name and refuses an unknown one before any work;
    eval_only rebuilds the architecture the named weights carry."""
    from detector.config import load_config
    from detector.engine.config_checks import ConfigError, validate_config
    from detector.engine.run import checkpoint_model

    with pytest.raises(ConfigError, match="model.weights=torchvision://fasterrcnn_resnet50_fpn_v3: Unknown"):
        validate_config(load_config(["model.weights=torchvision://fasterrcnn_resnet50_fpn_v3"]))
    cfg = load_config([f"model.weights={TV_DETECTOR}", "eval_only=true"])
    validate_config(cfg)
    assert hub == []   # checking the setting fetched nothing

    data = torch_bytes(torchvision_detector_state())
    plant(TV_DETECTOR, data)
    accept_planted(monkeypatch, TV_DETECTOR, data)
    _, cfg = checkpoint_model(cfg, ["model.roi_heads.score_thresh=0.3"])
    assert cfg.backbone.name == "resnet18" and cfg.model.fpn.out_channels == FPN_DIM
    assert cfg.model.roi_heads.fc_dim == FC_DIM and cfg.model.roi_heads.score_thresh == 0.3
    assert cfg.model.weights == TV_DETECTOR   # the name stays in the run's config.yaml


def torchvision_v2_state() -> dict:
    """fasterrcnn_resnet50_fpn_v2's layout (BatchNorm in the body and FPN, 2-conv RPN head,
    4conv1fc box head) on a ResNet-18 with narrow heads."""
    from torch import nn
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
    from torchvision.models.detection.rpn import RPNHead

    torch.manual_seed(0)
    body = torchvision.models.resnet18(weights=None)
    backbone = BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [64, 128, 256, 512], FPN_DIM,
                               norm_layer=nn.BatchNorm2d)
    model = FasterRCNN(backbone, num_classes=None, rpn_head=RPNHead(FPN_DIM, 3, conv_depth=2),
                       box_head=FastRCNNConvFCHead((FPN_DIM, 7, 7), [FPN_DIM] * 4, [FC_DIM], norm_layer=nn.BatchNorm2d),
                       box_predictor=FastRCNNPredictor(FC_DIM, 91))
    for module in model.modules():   # statistics other than 0 and 1, so a wrong mapping shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model.state_dict()


def test_torchvision_v2_planted_file_is_used(hub, monkeypatch):
    """The v2 name is one registry entry; its file converts to model=faster_rcnn_fpn_v2."""
    planted = torchvision_v2_state()
    data = torch_bytes(planted)
    plant("torchvision://fasterrcnn_resnet50_fpn_v2", data)
    accept_planted(monkeypatch, "torchvision://fasterrcnn_resnet50_fpn_v2", data)

    model = load_model("torchvision://fasterrcnn_resnet50_fpn_v2")
    assert model.config.model.name == "faster_rcnn_fpn_v2"
    ours = list(v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    theirs = [v for k, v in planted.items() if not k.endswith("num_batches_tracked")]
    assert len(ours) == len(theirs)
    # Every planted tensor is in the model, unchanged (names differ; values identify them).
    remaining = list(ours)
    for value in theirs:
        match = next(i for i, mine in enumerate(remaining) if mine.shape == value.shape and torch.equal(mine, value))
        remaining.pop(match)
    assert hub == []


# ---------------------------------------------------------------- Mask R-CNN and Cascade (Mask) R-CNN
MASK_DIM = 16
TV_MASK = "torchvision://maskrcnn_resnet50_fpn"
TV_MASK_V2 = "torchvision://maskrcnn_resnet50_fpn_v2"
D2_MASK = "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x"
D2_CASCADE_MASK = "detectron2://Misc/cascade_mask_rcnn_R_50_FPN_3x"


def torchvision_mask_state(v2: bool) -> dict:
    """torchvision's MaskRCNN layout (91 outputs) on a ResNet-18 with narrow heads: v1 as
    maskrcnn_resnet50_fpn assembles it (FrozenBatchNorm2d body), v2 as maskrcnn_resnet50_fpn_v2
    (BatchNorm2d body and FPN, 2-conv RPN head, 4conv1fc box head, mask convs with BatchNorm)."""
    from torch import nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead

    torch.manual_seed(1)
    norm = nn.BatchNorm2d if v2 else FrozenBatchNorm2d
    body = torchvision.models.resnet18(weights=None, norm_layer=norm)
    backbone = BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [64, 128, 256, 512], FPN_DIM,
                               norm_layer=nn.BatchNorm2d if v2 else None)
    heads = {"rpn_head": RPNHead(FPN_DIM, 3, conv_depth=2),
             "box_head": FastRCNNConvFCHead((FPN_DIM, 7, 7), [FPN_DIM] * 4, [FC_DIM], norm_layer=nn.BatchNorm2d)} if v2 \
        else {"box_head": TwoMLPHead(FPN_DIM * 49, FC_DIM)}
    model = MaskRCNN(backbone, num_classes=None, box_predictor=FastRCNNPredictor(FC_DIM, 91),
                     mask_head=MaskRCNNHeads(FPN_DIM, [MASK_DIM] * 4, 1, norm_layer=nn.BatchNorm2d if v2 else None),
                     mask_predictor=MaskRCNNPredictor(MASK_DIM, MASK_DIM, 91), **heads)
    for module in model.modules():   # statistics other than 0 and 1, so a wrong mapping shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model.state_dict()


def legacy_torchvision_names(state: dict) -> dict:
    """The names of torchvision releases before Conv2dNormActivation, which the published
    maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth still uses: mask_head.mask_fcn{i+1}, unnumbered FPN
    blocks and RPN conv (torchvision's own _load_from_state_dict upgrades them the same way)."""
    import re

    legacy = {}
    for key, value in state.items():
        key = re.sub(r"^roi_heads\.mask_head\.(\d+)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.", key)
        key = re.sub(r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.0\.", r"backbone.fpn.\1_blocks.\2.", key)
        legacy[key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")] = value
    return legacy


def assert_every_tensor_loaded(model, planted: dict) -> None:
    """Every planted tensor is in the model unchanged, and nothing else (names differ; values identify them)."""
    ours = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [torch.as_tensor(v) for k, v in planted.items() if not k.endswith("num_batches_tracked")]
    assert len(ours) == len(theirs)
    remaining = list(ours)
    for value in theirs:
        match = next(i for i, mine in enumerate(remaining) if mine.shape == value.shape and torch.equal(mine, value))
        remaining.pop(match)


@pytest.mark.parametrize("name, v2", [(TV_MASK, False), (TV_MASK_V2, True)])
def test_torchvision_mask_rcnn_planted_file_is_used(hub, monkeypatch, name, v2):
    state = torchvision_mask_state(v2)
    planted = state if v2 else legacy_torchvision_names(state)
    data = torch_bytes(planted)
    plant(name, data)
    accept_planted(monkeypatch, name, data)

    model = load_model(name)
    assert model.config.model.name == ("mask_rcnn_fpn_v2" if v2 else "mask_rcnn_fpn")
    assert model.config.model.roi_heads.mask_head.norm == ("bn" if v2 else "")
    assert model.config.model.roi_heads.mask_paste == "torchvision" == model.roi_heads.mask_paste
    assert model.config.backbone.norm == ("bn" if v2 else "frozen_bn") and model.num_classes == 90
    assert_every_tensor_loaded(model, planted)
    ours = model.state_dict()
    for i in range(4):
        assert torch.equal(ours[f"roi_heads.mask_head.{i}.0.weight"], state[f"roi_heads.mask_head.{i}.0.weight"])
    assert torch.equal(ours["roi_heads.mask_predictor.mask_fcn_logits.bias"],
                       state["roi_heads.mask_predictor.mask_fcn_logits.bias"])
    with torch.no_grad():
        detections = model([torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))])[0]
    assert detections["masks"].shape == (len(detections["boxes"]), 1, 64, 80)
    assert hub == []


def detectron2_mask_weights(cascade: bool) -> dict:
    """detectron2_r18_fpn_weights plus MaskRCNNConvUpsampleHead's names; `cascade`: the three
    stages of CascadeROIHeads (box_head.{k}, box_predictor.{k} with 4 class-agnostic deltas)."""
    rng = np.random.default_rng(1)
    weights = detectron2_r18_fpn_weights()
    if cascade:
        for key in [k for k in weights if k.startswith(("roi_heads.box_head.", "roi_heads.box_predictor."))]:
            value = weights.pop(key)
            for stage in range(3):
                staged = key.replace("box_head.", f"box_head.{stage}.").replace("box_predictor.", f"box_predictor.{stage}.")
                weights[staged] = (value[:4] if ".bbox_pred." in key else value) + np.float32(stage * 0.01)
    shapes = {f"roi_heads.mask_head.mask_fcn{n}.weight": (MASK_DIM, FPN_DIM if n == 1 else MASK_DIM, 3, 3)
              for n in range(1, 5)}
    shapes.update({f"roi_heads.mask_head.mask_fcn{n}.bias": (MASK_DIM,) for n in range(1, 5)})
    shapes.update({"roi_heads.mask_head.deconv.weight": (MASK_DIM, MASK_DIM, 2, 2), "roi_heads.mask_head.deconv.bias": (MASK_DIM,),
                   "roi_heads.mask_head.predictor.weight": (80, MASK_DIM, 1, 1), "roi_heads.mask_head.predictor.bias": (80,)})
    weights.update({k: rng.standard_normal(s).astype(np.float32) * 0.01 for k, s in shapes.items()})
    return weights


@pytest.mark.parametrize("name, cascade", [(D2_MASK, False), (D2_CASCADE_MASK, True)])
def test_detectron2_mask_and_cascade_planted_files_are_used(hub, monkeypatch, name, cascade):
    planted = detectron2_mask_weights(cascade)
    data = pickle.dumps({"model": planted, "__author__": "Detectron2 Model Zoo"}, protocol=2)
    plant(name, data)
    accept_planted(monkeypatch, name, data)

    model = load_model(name)
    ours = model.state_dict()
    for key, value in planted.items():
        assert np.array_equal(ours[detectron2_key_to_ours(key)].numpy(), value), key
    assert_every_tensor_loaded(model, planted)
    cfg = model.config.model
    assert cfg.name == ("cascade_mask_rcnn_fpn" if cascade else "mask_rcnn_fpn")
    assert cfg.input.format == "BGR" and cfg.class_names[-1] == "toothbrush"
    assert cfg.roi_heads.predictor_layout == "detectron2" and cfg.roi_heads.pooler_aligned
    assert_detectron2_box_losses(model)
    # Its masks are pasted Detectron2's way (tests/modeling/test_mask_paste.py checks that way).
    assert cfg.roi_heads.mask_paste == "detectron2" and model.roi_heads.mask_paste == "detectron2"
    with torch.no_grad():
        detections = model([torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))])[0]
    assert detections["masks"].shape == (len(detections["boxes"]), 1, 64, 80)
    assert hub == []


@pytest.mark.parametrize("name, file_name", [
    (TV_MASK, "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
    (TV_MASK_V2, "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"),
    ("detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x",
     "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/137260431/model_final_a54504.pkl"),
    (D2_MASK, "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl"),
    ("detectron2://Misc/cascade_mask_rcnn_R_50_FPN_1x", "Misc/cascade_mask_rcnn_R_50_FPN_1x/138602847/model_final_e9d89b.pkl"),
    (D2_CASCADE_MASK, "Misc/cascade_mask_rcnn_R_50_FPN_3x/144998488/model_final_480dd8.pkl"),
    ("detectron2://Misc/mask_rcnn_R_50_FPN_3x_gn", "Misc/mask_rcnn_R_50_FPN_3x_gn/138602888/model_final_dc5d9e.pkl"),
    ("detectron2://Misc/mask_rcnn_R_50_FPN_3x_syncbn",
     "Misc/mask_rcnn_R_50_FPN_3x_syncbn/169527823/model_final_3b3c51.pkl"),
])
def test_mask_and_cascade_names_missing_file_names_url_and_path(hub, tmp_path, name, file_name):
    prefix = "https://download.pytorch.org/models/" if name.startswith("torchvision") else detectron2_source.DETECTRON2_PREFIX
    url = prefix + file_name
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / file_name.rsplit("/", 1)[-1]
    with pytest.raises(zoo.PublishedWeightsError) as error:
        load_model(name)
    assert url in str(error.value) and str(expected) in str(error.value) and "\n" not in str(error.value)
    assert hub == [(url, expected)]
    assert zoo.lookup(name).kind == "detector" and "mask AP" in zoo.lookup(name).metric
