"""Detectron2 model-zoo RetinaNet weights (COCO-Detection/retinanet_R_50_FPN_1x|3x), checked against
Detectron2 itself.

The parameter names are those Detectron2's modules register, read from its source
(github.com/facebookresearch/detectron2), not from this project's converter:

| names | where Detectron2 creates them |
| --- | --- |
| `backbone.bottom_up.*` | as for its R-CNNs (test_detectron2_conversion.py's table); configs/Base-RetinaNet.yaml `RESNETS.OUT_FEATURES: ["res3", "res4", "res5"]` |
| `backbone.fpn_lateral{3,4,5}`, `backbone.fpn_output{3,4,5}` | modeling/backbone/fpn.py `build_retinanet_resnet_fpn_backbone`: `in_features = cfg.MODEL.FPN.IN_FEATURES` (Base-RetinaNet: res3..res5), `FPN.__init__`: `stage = int(math.log2(strides[idx]))` (3..5) |
| `backbone.top_block.p6`, `backbone.top_block.p7` (weight, bias) | fpn.py: `top_block=LastLevelP6P7(in_channels_p6p7, out_channels)` with `in_channels_p6p7 = bottom_up.output_shape()["res5"].channels` (2048); `LastLevelP6P7`: `self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)`, `self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)`, `in_feature = "res5"`, forward `p6 = self.p6(c5); p7 = self.p7(F.relu(p6))`; `FPN.__init__`: `self.top_block = top_block` |
| `head.cls_subnet.{0,2,4,6}`, `head.bbox_subnet.{0,2,4,6}` (weight, bias) | meta_arch/retinanet.py `RetinaNetHead.__init__`: per conv `nn.Conv2d(in, out, kernel_size=3, stride=1, padding=1)`, `get_norm(norm, out)` only `if norm` (RETINANET.NORM ""), then `nn.ReLU()`, all in one `nn.Sequential`; `conv_dims = [input_shape[0].channels] * NUM_CONVS` (4) |
| `head.cls_score` (A*K outputs), `head.bbox_pred` (A*4) | same: 3x3 convs; `RetinaNet.forward`: `permute_to_N_HWA_K(x, K)` = view(N, -1, K, H, W).permute(0, 3, 4, 1, 2): channel a*K + k is anchor a, class k (no background column) |
| anchors | modeling/anchor_generator.py `DefaultAnchorGenerator.generate_cell_anchors`: `for size in sizes: area = size**2; for aspect_ratio in aspect_ratios: w = sqrt(area / aspect_ratio); h = aspect_ratio * w` (size-major), `_create_grid_offsets`: `arange(offset * stride, W * stride, stride)` with OFFSET 0.0, strides 8..128 (p3..p7); Base-RetinaNet SIZES `[[x, x * 2**(1.0/3), x * 2**(2.0/3)] for x in [32, ..., 512]]` |

The end-to-end check computes Detectron2's forward pass from the .pkl arrays with
torch.nn.functional (ResNet, FPN P3..P7, head), then its inference as retinanet.py's
`inference_single_image` and postprocessing.py's `detector_postprocess` do it (per level: sigmoid,
> SCORE_THRESH_TEST 0.05, sorted, top TOPK_CANDIDATES_TEST 1000, Box2BoxTransform deltas on
those anchors; then one class-wise batched_nms at 0.5, the best 100; then boxes scaled, clipped
to the image and empty ones dropped), and compares the converted model's detections with it.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from detector.modeling.build import build_model
from detector.weights.checkpoint_io import load_checkpoint
from detector.weights.conversion.convert import convert_weights
from detector.weights.conversion.detectron2_retinanet import anchor_order
from detector.weights.loading import load_model
from tests.modeling.test_detectron2_conversion import (BLOCKS, DETECTRON2_PIXEL_MEAN, _d2_conv, _random_weights,
                                                       _weightless, _write_zoo_file,
                                                       detectron2_faster_rcnn_fpn_shapes)

NUM_CLASSES = 80
FPN_DIM = 32     # MODEL.FPN.OUT_CHANNELS (256 in the zoo): narrow keeps the file small
NUM_ANCHORS = 9
SIZES = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
RATIOS = [0.5, 1.0, 2.0]
STRIDES = [8, 16, 32, 64, 128]
IMAGE = 128      # P7 is 1x1


def detectron2_retinanet_shapes() -> dict[str, tuple]:
    """Every parameter of Detectron2's RetinaNet R50-FPN (the module docstring's table)."""
    shapes = {k: v for k, v in detectron2_faster_rcnn_fpn_shapes(50, fpn_dim=FPN_DIM).items()
              if k.startswith("backbone.bottom_up.")}
    for stage, channels in zip((3, 4, 5), (512, 1024, 2048)):
        shapes[f"backbone.fpn_lateral{stage}.weight"] = (FPN_DIM, channels, 1, 1)
        shapes[f"backbone.fpn_output{stage}.weight"] = (FPN_DIM, FPN_DIM, 3, 3)
        shapes[f"backbone.fpn_lateral{stage}.bias"] = shapes[f"backbone.fpn_output{stage}.bias"] = (FPN_DIM,)
    for name, inputs in (("p6", 2048), ("p7", FPN_DIM)):
        shapes[f"backbone.top_block.{name}.weight"] = (FPN_DIM, inputs, 3, 3)
        shapes[f"backbone.top_block.{name}.bias"] = (FPN_DIM,)
    for subnet in ("cls_subnet", "bbox_subnet"):
        for index in (0, 2, 4, 6):
            shapes[f"head.{subnet}.{index}.weight"] = (FPN_DIM, FPN_DIM, 3, 3)
            shapes[f"head.{subnet}.{index}.bias"] = (FPN_DIM,)
    for name, outputs in (("cls_score", NUM_ANCHORS * NUM_CLASSES), ("bbox_pred", NUM_ANCHORS * 4)):
        shapes[f"head.{name}.weight"] = (outputs, FPN_DIM, 3, 3)
        shapes[f"head.{name}.bias"] = (outputs,)
    return shapes


def retinanet_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights whose detections are spread: class logits of std ~1 around -4 (scores from
    ~0.001 to ~0.5, a priori per class), box deltas of a few hundredths (the factors below were
    measured on the test image's features)."""
    weights = _random_weights(detectron2_retinanet_shapes(), seed)
    rng = np.random.default_rng(seed + 1)
    weights["head.cls_score.weight"] = (weights["head.cls_score.weight"] * 0.04).astype(np.float32)
    weights["head.cls_score.bias"] = rng.normal(-4.0, 0.5, (NUM_ANCHORS * NUM_CLASSES,)).astype(np.float32)
    weights["head.bbox_pred.weight"] = (weights["head.bbox_pred.weight"] * 0.0015).astype(np.float32)
    return weights


@pytest.fixture(scope="module")
def zoo_retinanet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("d2retina")
    weights = retinanet_weights()
    _write_zoo_file(folder / "retinanet.pkl", weights)
    convert_weights("detectron2", folder / "retinanet.pkl", folder / "retinanet.pth")
    model = load_model(folder / "retinanet.pth", overrides=[f"model.input.min_size_test={IMAGE}",
                                                           f"model.input.max_size_test={IMAGE}"])
    return {k: torch.from_numpy(v) for k, v in weights.items()}, model, folder


def test_every_detectron2_name_maps_one_to_one_onto_the_converted_model(zoo_retinanet):
    w, model, folder = zoo_retinanet
    checkpoint = load_checkpoint(folder / "retinanet.pth")
    ours = build_model(_weightless(checkpoint["config"])).state_dict()
    assert len(checkpoint["model"]) == len(w) and set(checkpoint["model"]) == set(ours)
    cfg = checkpoint["config"]["model"]
    assert cfg["name"] == "retinanet_fpn" and cfg["fpn"]["p6_source"] == "c5" and cfg["input"]["format"] == "BGR"
    assert cfg["head_loss"]["box_loss"] == "smooth_l1" and cfg["head_loss"]["smooth_l1_beta"] == 0.0
    assert cfg["head_loss"]["normalizer"] == "batch_ema" and cfg["postprocess"]["detections_per_img"] == 100
    assert cfg["anchor_generator"]["round_anchors"] is False and cfg["anchor_generator"]["strides"] == STRIDES
    assert checkpoint["config"]["backbone"]["stride_in_1x1"] is True and model.num_classes == NUM_CLASSES
    # One anchor's block of class logits lands where this project's anchor order puts that anchor.
    order = anchor_order(3, 3)
    assert order.tolist() == [0, 3, 6, 1, 4, 7, 2, 5, 8]
    theirs = w["head.cls_score.weight"].view(NUM_ANCHORS, NUM_CLASSES, FPN_DIM, 3, 3)
    torch.testing.assert_close(checkpoint["model"]["head.cls_logits.weight"].view(NUM_ANCHORS, NUM_CLASSES, FPN_DIM, 3, 3)[1],
                               theirs[3])


def detectron2_pyramid(w: dict, images: torch.Tensor) -> list[torch.Tensor]:
    """P3..P7 as Detectron2's RetinaNet backbone computes them from normalized BGR images."""
    x = F.max_pool2d(F.relu(_d2_conv(w, images, "backbone.bottom_up.stem.conv1", 2, 3)), 3, 2, 1)   # BasicStem
    res = {}
    for stage, blocks in zip((2, 3, 4, 5), BLOCKS[50]):
        for block in range(blocks):
            p = f"backbone.bottom_up.res{stage}.{block}"
            stride = 2 if block == 0 and stage > 2 else 1
            out = F.relu(_d2_conv(w, x, f"{p}.conv1", stride))            # STRIDE_IN_1X1 (MSRA)
            out = F.relu(_d2_conv(w, out, f"{p}.conv2", 1, 1))
            out = _d2_conv(w, out, f"{p}.conv3")
            shortcut = _d2_conv(w, x, f"{p}.shortcut", stride) if f"{p}.shortcut.weight" in w else x
            x = F.relu(out + shortcut)
        res[stage] = x
    prev = _d2_conv(w, res[5], "backbone.fpn_lateral5")
    results = [_d2_conv(w, prev, "backbone.fpn_output5", 1, 1)]
    for stage in (4, 3):
        prev = _d2_conv(w, res[stage], f"backbone.fpn_lateral{stage}") + F.interpolate(prev, scale_factor=2, mode="nearest")
        results.insert(0, _d2_conv(w, prev, f"backbone.fpn_output{stage}", 1, 1))
    p6 = F.conv2d(res[5], w["backbone.top_block.p6.weight"], w["backbone.top_block.p6.bias"], 2, 1)
    p7 = F.conv2d(F.relu(p6), w["backbone.top_block.p7.weight"], w["backbone.top_block.p7.bias"], 2, 1)
    return results + [p6, p7]


def detectron2_anchors(height: int, width: int, stride: int, sizes: list[float]) -> torch.Tensor:
    cell = []
    for size in sizes:                       # size-major, as generate_cell_anchors
        for ratio in RATIOS:
            w_ = (size ** 2 / ratio) ** 0.5
            h_ = ratio * w_
            cell.append([-w_ / 2, -h_ / 2, w_ / 2, h_ / 2])
    cell = torch.tensor(cell, dtype=torch.float32)
    xs = torch.arange(0, width * stride, stride, dtype=torch.float32)
    ys = torch.arange(0, height * stride, stride, dtype=torch.float32)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([xx.reshape(-1), yy.reshape(-1), xx.reshape(-1), yy.reshape(-1)], dim=1)
    return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)


def detectron2_detections(w: dict, bgr: torch.Tensor, height: int, width: int) -> dict:
    """RetinaNet.forward + inference_single_image + detector_postprocess (module docstring)."""
    boxes_all, scores_all, classes_all = [], [], []
    for feature, stride, sizes in zip(detectron2_pyramid(w, bgr), STRIDES, SIZES):
        cls, box = feature, feature
        for index in (0, 2, 4, 6):
            cls = F.relu(F.conv2d(cls, w[f"head.cls_subnet.{index}.weight"], w[f"head.cls_subnet.{index}.bias"], 1, 1))
            box = F.relu(F.conv2d(box, w[f"head.bbox_subnet.{index}.weight"], w[f"head.bbox_subnet.{index}.bias"], 1, 1))
        logits = F.conv2d(cls, w["head.cls_score.weight"], w["head.cls_score.bias"], 1, 1)
        deltas = F.conv2d(box, w["head.bbox_pred.weight"], w["head.bbox_pred.bias"], 1, 1)
        n, _, h, wd = logits.shape
        logits = logits.view(n, -1, NUM_CLASSES, h, wd).permute(0, 3, 4, 1, 2).reshape(-1, NUM_CLASSES)
        deltas = deltas.view(n, -1, 4, h, wd).permute(0, 3, 4, 1, 2).reshape(-1, 4)
        anchors = detectron2_anchors(h, wd, stride, sizes)
        prob = logits.flatten().sigmoid()
        keep = torch.nonzero(prob > 0.05, as_tuple=True)[0]
        prob, order = prob[keep].sort(descending=True)
        keep = keep[order][:1000]
        prob = prob[:1000]
        anchor_index, classes = keep // NUM_CLASSES, keep % NUM_CLASSES
        a, d = anchors[anchor_index], deltas[anchor_index]
        widths, heights = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cx, cy = a[:, 0] + 0.5 * widths, a[:, 1] + 0.5 * heights
        dw, dh = d[:, 2].clamp(max=np.log(1000.0 / 16)), d[:, 3].clamp(max=np.log(1000.0 / 16))
        px, py = d[:, 0] * widths + cx, d[:, 1] * heights + cy
        pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
        boxes_all.append(torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], dim=1))
        scores_all.append(prob)
        classes_all.append(classes)
    boxes, scores, classes = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(classes_all)
    keep = batched_nms(boxes, scores, classes, 0.5)[:100]
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)     # Boxes.clip, then nonempty()
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {"boxes": boxes[nonempty], "scores": scores[nonempty], "labels": classes[nonempty] + 1}


def test_converted_retinanet_detects_what_detectron2_detects(zoo_retinanet):
    w, model, _ = zoo_retinanet
    rgb = torch.rand(3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))
    bgr = (rgb.flip(0) * 255 - torch.tensor(DETECTRON2_PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1))[None]
    with torch.no_grad():
        expected = detectron2_detections(w, bgr, IMAGE, IMAGE)
        actual = model([rgb])[0]
    assert 50 <= len(expected["boxes"]) <= 100, len(expected["boxes"])
    assert len(set(expected["labels"].tolist())) > 5
    assert len(actual["boxes"]) == len(expected["boxes"])
    assert torch.equal(actual["labels"], expected["labels"])
    torch.testing.assert_close(actual["scores"], expected["scores"], atol=1e-4, rtol=0)
    torch.testing.assert_close(actual["boxes"], expected["boxes"], atol=1e-2, rtol=0)
