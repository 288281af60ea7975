"""Cascade R-CNN's RoI heads: stage losses, stage-by-stage refinement, score averaging."""
import math

import pytest
import torch

from detector.modeling.box_coder import BoxCoder
from detector.modeling.cascade import CASCADE_BBOX_REG_WEIGHTS, CASCADE_IOU_THRESHOLDS, CascadeRoIHeads
from detector.modeling.mask_head import MaskHead, MaskPredictor
from detector.modeling.matcher import Matcher
from detector.modeling.poolers import MultiLevelRoIAlign
from detector.modeling.box_predictor import BoxPredictor
from detector.modeling.roi_heads import FCBoxHead
from detector.modeling.sampler import BalancedSampler

STRIDES = [4, 8, 16, 32]


def make_cascade(num_classes=3, channels=8, with_mask=False, seed=0, **options):
    torch.manual_seed(seed)
    mask = {}
    if with_mask:
        mask = dict(mask_pooler=MultiLevelRoIAlign(14, STRIDES), mask_head=MaskHead(channels, conv_dim=8),
                    mask_predictor=MaskPredictor(8, num_classes, deconv_dim=8, layout="detectron2"))
    return CascadeRoIHeads(
        MultiLevelRoIAlign(7, STRIDES, aligned=True),
        [FCBoxHead(channels, 7, fc_dim=32) for _ in range(3)],
        [BoxPredictor(32, num_classes, "detectron2", class_agnostic=True) for _ in range(3)],
        [BoxCoder(w) for w in CASCADE_BBOX_REG_WEIGHTS],
        [Matcher(t, t) for t in CASCADE_IOU_THRESHOLDS],
        BalancedSampler(64, 0.25), **options, **mask)


def pyramid(size=(64, 80), channels=8, images=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(images, channels, size[0] // s, size[1] // s, generator=generator) for s in STRIDES]


def random_boxes(count, height, width, generator):
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
    size = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.4, height * 0.4]) + 4.0
    return torch.cat([corner, corner + size], dim=1)


def targets_with_masks():
    targets = []
    for shift in (0.0, 5.0):
        boxes = torch.tensor([[8.0 + shift, 10.0, 40.0 + shift, 42.0], [44.0, 20.0 - shift, 76.0, 52.0 - shift]])
        masks = torch.zeros(2, 64, 80, dtype=torch.uint8)
        for mask, b in zip(masks, boxes.int()):
            mask[b[1] + 4: b[3] - 4, b[0] + 4: b[2] - 4] = 1
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks})
    return targets


def noisy_proposals(targets, seed=0):
    """Random boxes plus jittered copies of the ground truth, so every stage has positives."""
    generator = torch.Generator().manual_seed(seed)
    proposals = []
    for t in targets:
        jitter = torch.cat([t["boxes"] + torch.randn(t["boxes"].shape, generator=generator) * 3 for _ in range(6)])
        proposals.append(torch.cat([random_boxes(30, 64, 80, generator), jitter]).clamp(min=0))
    return proposals


@pytest.mark.parametrize("with_mask", [False, True])
def test_training_step_has_every_stage_loss_finite_and_trains_every_stage(with_mask):
    heads = make_cascade(with_mask=with_mask).train()
    features = [f.requires_grad_() for f in pyramid()]
    targets = targets_with_masks()
    detections, losses = heads(features, noisy_proposals(targets), [(64, 80), (64, 80)], targets)
    expected = {f"loss_{kind}_stage{k}" for kind in ("classifier", "box_reg") for k in range(3)}
    assert detections == [] and set(losses) == expected | ({"loss_mask"} if with_mask else set())
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for stage in range(3):
        assert heads.box_head[stage].fc1.weight.grad.abs().sum() > 0
        assert heads.box_predictor[stage].bbox_pred.weight.grad.abs().sum() > 0
    assert features[0].grad is not None
    if with_mask:
        assert heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0


def test_stage_loss_weights_scale_each_stage():
    targets = targets_with_masks()
    proposals = noisy_proposals(targets)
    plain = make_cascade().train()
    weighted = make_cascade(stage_loss_weights=[1.0, 0.5, 0.25]).train()
    torch.manual_seed(1)   # the same sample drawn by both
    base = plain(pyramid(), proposals, [(64, 80)] * 2, targets)[1]
    torch.manual_seed(1)
    scaled = weighted(pyramid(), proposals, [(64, 80)] * 2, targets)[1]
    for k, w in enumerate([1.0, 0.5, 0.25]):
        for kind in ("classifier", "box_reg"):
            name = f"loss_{kind}_stage{k}"
            torch.testing.assert_close(scaled[name], base[name] * w)


def test_each_stage_labels_at_its_own_iou_threshold():
    heads = make_cascade()
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])}
    # IoU with the ground truth: 0.55, 0.65, 0.75 (boxes [0, 0, 10, 10 * iou]).
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.5], [0.0, 0.0, 10.0, 6.5], [0.0, 0.0, 10.0, 7.5]])
    labels = [heads.label_boxes(stage, boxes, target)[0].tolist() for stage in range(3)]
    assert labels == [[2, 2, 2], [0, 2, 2], [0, 0, 2]]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    labels, matched = heads.label_boxes(1, boxes, empty)
    assert labels.tolist() == [0, 0, 0] and matched.tolist() == [-1, -1, -1]


def test_later_stages_train_on_the_refined_boxes():
    heads = make_cascade().train()
    seen = []
    original = heads.run_stage

    def record(stage, features, boxes):
        seen.append([b.clone() for b in boxes])
        return original(stage, features, boxes)

    heads.run_stage = record
    with torch.no_grad():
        # Stage 0 moves every box 2 px right (dx = 1 at weight 10 on 20 px boxes: see below).
        heads.box_predictor[0].bbox_pred.weight.zero_()
        heads.box_predictor[0].bbox_pred.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    target = {"boxes": torch.tensor([[20.0, 20.0, 40.0, 40.0]]), "labels": torch.tensor([1])}
    heads(pyramid(images=1), [torch.tensor([[21.0, 20.0, 41.0, 40.0]])], [(64, 80)], [target])
    stage0, stage1 = seen[0][0], seen[1][0]
    width = stage0[:, 2] - stage0[:, 0]
    expected = stage0 + torch.stack([width * 0.1, 0 * width, width * 0.1, 0 * width], dim=1)
    expected[:, 0::2] = expected[:, 0::2].clamp(max=80)
    torch.testing.assert_close(stage1, expected[(expected[:, 2] > expected[:, 0])])


def test_inference_averages_the_stage_scores_and_takes_the_last_stage_boxes():
    """One proposal, two classes, each stage's predictor a constant: the expected detections by hand."""
    heads = make_cascade(num_classes=2, score_thresh=0.0)
    stage_logits = [[0.0, 1.0, 2.0], [1.0, 0.5, 0.0], [2.0, 0.0, -1.0]]   # background, class 1, class 2
    stage_deltas = [[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 15 * math.log(2.0), 0.0]]
    with torch.no_grad():
        for predictor, logits, deltas in zip(heads.box_predictor, stage_logits, stage_deltas):
            predictor.cls_score.weight.zero_()
            predictor.bbox_pred.weight.zero_()
            predictor.cls_score.bias.copy_(torch.tensor(logits[1:] + logits[:1]))   # Detectron2: background last
            predictor.bbox_pred.bias.copy_(torch.tensor(deltas))
    heads.eval()
    with torch.no_grad():
        detections, _ = heads(pyramid(images=1), [torch.tensor([[10.0, 10.0, 30.0, 30.0]])], [(64, 80)])
    # Box [10, 10, 30, 30]: 20 px, centre (20, 20).
    # Stage 0, weights (10, 10, 5, 5): dx 1 -> centre x + 0.1 * 20        -> [12, 10, 32, 30]
    # Stage 1, weights (20, 20, 10, 10): dy 2 -> centre y + 0.1 * 20       -> [12, 12, 32, 32]
    # Stage 2, weights (30, 30, 15, 15): dw 15 ln 2 -> width x 2 about x=22 -> [2, 12, 42, 32]
    def softmax(values):
        exps = [math.exp(v) for v in values]
        return [e / sum(exps) for e in exps]

    probabilities = [softmax(v) for v in stage_logits]
    expected_scores = [sum(p[c] for p in probabilities) / 3 for c in (1, 2)]
    result = detections[0]
    order = sorted([(expected_scores[0], 1), (expected_scores[1], 2)], reverse=True)
    assert result["labels"].tolist() == [label for _, label in order]
    torch.testing.assert_close(result["scores"], torch.tensor([score for score, _ in order]))
    torch.testing.assert_close(result["boxes"], torch.tensor([[2.0, 12.0, 42.0, 32.0]] * 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("with_mask", [False, True])
def test_inference_output_shapes(with_mask):
    heads = make_cascade(with_mask=with_mask, score_thresh=0.0, detections_per_img=15).eval()
    generator = torch.Generator().manual_seed(3)
    proposals = [random_boxes(40, 64, 80, generator), random_boxes(0, 64, 80, generator)]
    with torch.no_grad():
        detections, losses = heads(pyramid(), proposals, [(64, 80), (50, 70)])
    assert losses == {} and len(detections) == 2
    first, empty = detections
    assert set(first) == {"boxes", "scores", "labels"} | ({"masks"} if with_mask else set())
    assert 0 < len(first["boxes"]) <= 15 and first["boxes"].shape[1] == 4
    assert ((first["labels"] >= 1) & (first["labels"] <= 3)).all()
    assert len(empty["boxes"]) == 0
    if with_mask:
        assert first["masks"].shape == (len(first["boxes"]), 1, 28, 28) and empty["masks"].shape[0] == 0


def test_state_dict_keys_are_detectron2s_cascade_keys():
    """Detectron2's Cascade (Mask) R-CNN FPN model zoo: roi_heads.box_head.{k}.fc1/fc2 and
    roi_heads.box_predictor.{k}.cls_score/bbox_pred (class-agnostic boxes)."""
    heads = make_cascade(num_classes=80, with_mask=True)
    keys = set(heads.state_dict())
    for k in range(3):
        for name in ("box_head.{k}.fc1", "box_head.{k}.fc2", "box_predictor.{k}.cls_score", "box_predictor.{k}.bbox_pred"):
            assert {name.format(k=k) + ".weight", name.format(k=k) + ".bias"} <= keys
        assert heads.state_dict()[f"box_predictor.{k}.bbox_pred.weight"].shape == (4, 32)
        assert heads.state_dict()[f"box_predictor.{k}.cls_score.weight"].shape == (81, 32)
    assert heads.state_dict()["mask_predictor.mask_fcn_logits.weight"].shape[0] == 80
    assert {k for k in keys if not k.startswith(("box_head.", "box_predictor.", "mask_head.", "mask_predictor."))} == set()


def test_mismatched_stage_settings_are_a_clear_error():
    with pytest.raises(ValueError, match="per stage"):
        CascadeRoIHeads(MultiLevelRoIAlign(7, STRIDES), [FCBoxHead(8, 7, 32)] * 3, [BoxPredictor(32, 2, class_agnostic=True)] * 3,
                        [BoxCoder(w) for w in CASCADE_BBOX_REG_WEIGHTS], [Matcher(t, t) for t in CASCADE_IOU_THRESHOLDS],
                        BalancedSampler(64, 0.25), stage_loss_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="together"):
        make_cascade(mask_head=MaskHead(8, conv_dim=8))


@pytest.mark.parametrize("with_mask", [False, True])
def test_detector_built_from_config_with_cascade_heads(make_small_config, with_mask):
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    model = build_model(make_small_config(
        "model=cascade_mask_rcnn_fpn" if with_mask else "model=cascade_rcnn_fpn", "model.roi_heads.conv_dim=16",
        "model.input.min_size_test=64", "model.input.max_size_test=100", "model.roi_heads.score_thresh=0.0"))
    heads = model.roi_heads
    assert isinstance(heads, CascadeRoIHeads) and heads.num_stages == 3 and heads.has_mask == with_mask
    assert [c.weights for c in heads.box_coders] == [tuple(w) for w in CASCADE_BBOX_REG_WEIGHTS]
    assert [m.high_threshold for m in heads.matchers] == list(CASCADE_IOU_THRESHOLDS)
    assert heads.box_head[0] is not heads.box_head[1]
    targets = targets_with_masks()
    for t in targets:
        t["labels"] = torch.tensor([1, 2])
    model.train()
    losses = model([torch.rand(3, 64, 80) for _ in targets], targets)
    assert {"loss_classifier_stage2", "loss_box_reg_stage2"} <= set(losses)
    assert ("loss_mask" in losses) == with_mask and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        output = model([torch.rand(3, 90, 150)])[0]
    assert len(output["boxes"]) > 0
    if with_mask:
        assert output["masks"].shape == (len(output["boxes"]), 1, 90, 150)


def test_detectron2_cascade_mask_roi_head_keys_map_by_simple_renames():
    """The renames a Detectron2 converter needs for these heads (model-zoo names on the left):
    box stages 1:1, mask_fcn{n} -> mask_head.{n-1}.0, deconv -> conv5_mask, predictor -> mask_fcn_logits."""
    import re

    heads = make_cascade(num_classes=80, with_mask=True)
    ours = heads.state_dict()
    detectron2 = {}
    for k in range(3):
        for layer in ("fc1", "fc2"):
            for part in ("weight", "bias"):
                detectron2[f"roi_heads.box_head.{k}.{layer}.{part}"] = ours[f"box_head.{k}.{layer}.{part}"]
        for layer in ("cls_score", "bbox_pred"):
            for part in ("weight", "bias"):
                detectron2[f"roi_heads.box_predictor.{k}.{layer}.{part}"] = ours[f"box_predictor.{k}.{layer}.{part}"]
    for part in ("weight", "bias"):
        for n in range(1, 5):
            detectron2[f"roi_heads.mask_head.mask_fcn{n}.{part}"] = torch.randn(ours[f"mask_head.{n - 1}.0.{part}"].shape)
        detectron2[f"roi_heads.mask_head.deconv.{part}"] = torch.randn(ours[f"mask_predictor.conv5_mask.{part}"].shape)
        detectron2[f"roi_heads.mask_head.predictor.{part}"] = torch.randn(ours[f"mask_predictor.mask_fcn_logits.{part}"].shape)
    renames = [
        (r"^roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)$", lambda m: f"mask_head.{int(m[1]) - 1}.0.{m[2]}"),
        (r"^roi_heads\.mask_head\.deconv\.", lambda m: "mask_predictor.conv5_mask."),
        (r"^roi_heads\.mask_head\.predictor\.", lambda m: "mask_predictor.mask_fcn_logits."),
        (r"^roi_heads\.", lambda m: ""),
    ]
    converted = {}
    for key, value in detectron2.items():
        pattern, replacement = next((p, r) for p, r in renames if re.match(p, key))
        converted[re.sub(pattern, replacement, key)] = value
    heads.load_state_dict(converted, strict=True)
    assert torch.equal(heads.mask_head[3][0].weight, detectron2["roi_heads.mask_head.mask_fcn4.weight"])
