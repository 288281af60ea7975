"""Detectron2 model-zoo R-CNN R50/R101-FPN weights -> this project's names and config: Faster
R-CNN (COCO-Detection/faster_rcnn_*), Mask R-CNN (COCO-InstanceSegmentation/mask_rcnn_*_FPN_*),
Cascade (Mask) R-CNN (Misc/cascade_mask_rcnn_*) and the GN / SyncBN Mask R-CNNs with a 4conv1fc
box head (Misc/*mask_rcnn_R_50_FPN_3x_gn, _syncbn: the v2 options' layout) and Keypoint R-CNN
(COCO-Keypoints/keypoint_rcnn_*), told apart by their keys.

Detectron2 differs from torchvision in ways that change the outputs, so the converted
config reproduces each: BGR input on the 0..255 scale (mean [103.53, 116.28, 123.675],
std 1), the stride in the first 1x1 conv of each bottleneck (MSRA ResNet), aligned
RoIAlign with adaptive sampling, unrounded anchors at fixed strides, background as the
last class score and box deltas for foreground classes only.

Cascade R-CNN's stages are `roi_heads.box_head.{k}` / `roi_heads.box_predictor.{k}` there and
here (class-agnostic deltas, 4 per stage); the mask head's `mask_fcn{n}`, `deconv` and
`predictor` are `mask_head.{n-1}.0`, `mask_predictor.conv5_mask` and
`mask_predictor.mask_fcn_logits` here (K mask channels, no background, like the box layout).
Its masks are pasted Detectron2's way too (`roi_heads.mask_paste: detectron2`: the 28x28 cells
span the box exactly, sampled at pixel centres), not torchvision's (a zero border, the box grown
and truncated to pixels), which moves every mask edge by up to a pixel.

Keypoint R-CNN's KRCNNConvDeconvUpsampleHead (`conv_fcn{n}`, `score_lowres`) is torchvision's
network: `keypoint_head.{2(n-1)}` and `keypoint_predictor.kps_score_lowres` here. Its heatmaps
are decoded Detectron2's way (`roi_heads.keypoint_decoding: detectron2`: the same positions,
a softmax probability as the score), and its recipe's box loss is smooth L1 with beta 0.5.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import torch

from detector.weights.conversion.coco_classes import COCO_NAMES
from detector.weights.conversion.head_layout import keypoint_fields, mask_head_layout, norm_kind, numbered
from detector.weights.conversion.resnet_layout import infer_resnet_config

DETECTRON2_PIXEL_MEAN = [103.530, 116.280, 123.675]   # BGR, 0..255
DETECTRON2_PIXEL_STD = [1.0, 1.0, 1.0]

DETECTRON2_MODEL_SETTINGS = {
    "input": {
        "format": "BGR",
        # This project feeds [0, 1] images: (x*255 - m) / s == (x - m/255) / (s/255).
        "pixel_mean": [m / 255.0 for m in DETECTRON2_PIXEL_MEAN],
        "pixel_std": [s / 255.0 for s in DETECTRON2_PIXEL_STD],
    },
    "anchor_generator": {"round_anchors": False, "strides": [4, 8, 16, 32, 64]},
    # Box losses: Detectron2's defaults MODEL.RPN.SMOOTH_L1_BETA and MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA
    # are 0 (plain L1), and none of its R-CNN configs (Base-RCNN-FPN.yaml and those built on it,
    # cascade included) changes them; torchvision's 1/9 is conf/'s. (Its RetinaNet's
    # SMOOTH_L1_LOSS_BETA is 0.1; no RetinaNet converts here yet.)
    "rpn": {"post_nms_topk_train": 1000, "min_box_size": 0.0, "smooth_l1_beta": 0.0},
    "roi_heads": {
        "pooler_aligned": True,
        "pooler_sampling_ratio": 0,
        "predictor_layout": "detectron2",
        "min_box_size": 0.0,
        "smooth_l1_beta": 0.0,
    },
}

# configs/COCO-Keypoints/Base-Keypoint-RCNN-FPN.yaml on top of the R-CNN settings: smooth L1 with
# beta 0.5 for the box head ("keypoint AP degrades with plain L1"), 1500 proposals per training
# image; the keypoint pooler (ROIAlignV2, sampling ratio 0, 14x14) samples as the box pooler does.
DETECTRON2_KEYPOINT_SETTINGS = {
    "rpn": {"post_nms_topk_train": 1500},
    "roi_heads": {"smooth_l1_beta": 0.5, "keypoint_decoding": "detectron2", "keypoint_pooler_resolution": 14},
}

# Detectron2's CascadeROIHeads (configs/Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml): three stages at
# IoU 0.5 / 0.6 / 0.7 with box-coder weights (10,10,5,5), (20,20,10,10), (30,30,15,15) -- those of
# conf/model/cascade_rcnn_fpn.yaml -- and the box losses of every Detectron2 R-CNN above.
CASCADE_STAGES = 3

# Keys that carry no weights (older files saved these buffers; BatchNorm's step counter, which
# SyncBN files hold, only counts).
_IGNORED = re.compile(r"^(pixel_mean|pixel_std)$|anchor_generator\.cell_anchors|num_batches_tracked$")

_RENAMES = [
    (r"^backbone\.bottom_up\.stem\.conv1\.weight$", "backbone.body.conv1.weight"),
    (r"^backbone\.bottom_up\.stem\.conv1\.norm\.", "backbone.body.bn1."),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight$", None),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)$", None),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.weight$", None),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.(\w+)$", None),
    # FPN, box-head and mask-head convs: each a conv's weight (and bias), or its norm's parameters
    # (MODEL.FPN.NORM, ROI_BOX_HEAD.NORM, ROI_MASK_HEAD.NORM: GN or SyncBN in Misc/*_gn, *_syncbn).
    (r"^backbone\.fpn_(lateral|output)(\d)(?:\.(weight|bias)|\.norm\.(\w+))$", None),
    # FastRCNNConvFCHead with NUM_CONV > 0 ("4conv1fc"): conv1..n, then fc1.
    (r"^roi_heads\.box_head\.conv(\d+)(?:\.(weight|bias)|\.norm\.(\w+))$", None),
    (r"^proposal_generator\.rpn_head\.conv\.(weight|bias)$", r"rpn.head.convs.0.\1"),
    (r"^proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)$", r"rpn.head.objectness.\1"),
    (r"^proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)$", r"rpn.head.deltas.\1"),
    (r"^roi_heads\.box_head\.fc([12])\.(weight|bias)$", r"roi_heads.box_head.fc\1.\2"),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", r"roi_heads.box_predictor.\1.\2"),
    # Cascade R-CNN: one box head and one (class-agnostic) predictor per stage, same names.
    (r"^roi_heads\.box_head\.(\d+)\.fc([12])\.(weight|bias)$", r"roi_heads.box_head.\1.fc\2.\3"),
    (r"^roi_heads\.box_predictor\.(\d+)\.(cls_score|bbox_pred)\.(weight|bias)$", r"roi_heads.box_predictor.\1.\2.\3"),
    # Mask R-CNN's MaskRCNNConvUpsampleHead (roi_heads/mask_head.py): mask_fcn1..4, deconv, predictor.
    (r"^roi_heads\.mask_head\.mask_fcn(\d)(?:\.(weight|bias)|\.norm\.(\w+))$", None),
    (r"^roi_heads\.mask_head\.deconv\.(weight|bias)$", r"roi_heads.mask_predictor.conv5_mask.\1"),
    (r"^roi_heads\.mask_head\.predictor\.(weight|bias)$", r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
    # Keypoint R-CNN's KRCNNConvDeconvUpsampleHead (roi_heads/keypoint_head.py): conv_fcn1..8, score_lowres.
    (r"^roi_heads\.keypoint_head\.conv_fcn(\d+)\.(weight|bias)$", None),
    (r"^roi_heads\.keypoint_head\.score_lowres\.(weight|bias)$", r"roi_heads.keypoint_predictor.kps_score_lowres.\1"),
]


def detectron2_key_to_ours(key: str, box_conv_norm: bool = False) -> str:
    """Our name of a Detectron2 parameter. `box_conv_norm`: the box head's convs carry norms
    (each block here is then conv, norm, ReLU; otherwise conv, ReLU)."""
    for pattern, replacement in _RENAMES:
        match = re.match(pattern, key)
        if match is None:
            continue
        if replacement is not None:
            return re.sub(pattern, replacement, key)
        groups = match.groups()
        if ".fpn_" in key:   # ConvNorm: Sequential(conv, [norm])
            kind, level, param, norm_param = groups
            return f"backbone.fpn.{kind}_convs.{int(level) - 2}." + (f"1.{norm_param}" if norm_param else f"0.{param}")
        if ".conv_fcn" in key:   # one flat Sequential: conv, ReLU for each conv
            n, param = groups
            return f"roi_heads.keypoint_head.{2 * (int(n) - 1)}.{param}"
        if ".mask_fcn" in key:   # block n-1: Sequential(conv, [norm,] ReLU)
            n, param, norm_param = groups
            return f"roi_heads.mask_head.{int(n) - 1}." + (f"1.{norm_param}" if norm_param else f"0.{param}")
        if ".box_head.conv" in key:   # one flat Sequential: conv, [norm,] ReLU for each conv
            k, param, norm_param = groups
            index = (int(k) - 1) * (3 if box_conv_norm else 2) + (1 if norm_param else 0)
            return f"roi_heads.box_head.convs.{index}.{norm_param or param}"
        stage, block = int(groups[0]), groups[1]
        prefix = f"backbone.body.layer{stage - 1}.{block}"
        if ".shortcut." in key:
            return f"{prefix}.downsample.0.weight" if key.endswith("shortcut.weight") else f"{prefix}.downsample.1.{groups[2]}"
        conv = groups[2]
        return f"{prefix}.conv{conv}.weight" if key.endswith(f"conv{conv}.weight") else f"{prefix}.bn{conv}.{groups[3]}"
    raise ValueError(f"unexpected key '{key}' in the Detectron2 checkpoint: only Faster R-CNN, Mask R-CNN, Keypoint "
                     "R-CNN and Cascade (Mask) R-CNN with a ResNet-FPN backbone, StandardRPNHead, FastRCNNConvFCHead box heads (two fc, "
                     "or convs then one fc) and MaskRCNNConvUpsampleHead, with FrozenBN, SyncBN/BN or GN, are supported.")


def renamed_float_arrays(weights: Mapping, rename) -> tuple[dict, dict]:
    """(our name -> float32 tensor, the keys set aside: pixel statistics, cell anchors, counters)
    of a Detectron2 .pkl's arrays; a non-numeric array is refused, naming its key."""
    state, extra = {}, {}
    for key, value in weights.items():
        if _IGNORED.search(key):
            extra[key] = value
            continue
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"Detectron2 key '{key}' holds {array.dtype}, expected a numeric array.")
        state[rename(key)] = torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32)
    return state, extra


def convert_detectron2(checkpoint: Mapping):
    """Returns (state dict, backbone fields, model fields, num_classes, class_names)."""
    weights = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("the Detectron2 file holds no 'model' dict of arrays.")
    box_conv_norm = any(re.match(r"^roi_heads\.box_head\.conv\d+\.norm\.", str(k)) for k in weights)
    state, extra = renamed_float_arrays(weights, lambda key: detectron2_key_to_ours(key, box_conv_norm))
    backbone_norm = norm_kind(state, "backbone.body.bn1.")   # FrozenBN or SyncBN (statistics kept), or GN
    backbone = {**infer_resnet_config(state, "backbone.body."), "norm": "gn" if backbone_norm == "gn" else "frozen_bn",
                "freeze_at": 2}
    conv_box_head = "roi_heads.box_head.convs.0.weight" in state
    # The model zoo's MSRA ResNets stride in the 1x1 conv; its ResNeXts (FB weights) do not, nor
    # do its 4conv1fc recipes (Misc/*_gn, *_syncbn: RESNETS.STRIDE_IN_1X1 False, GN or MSRA weights).
    backbone["stride_in_1x1"] = backbone["groups"] == 1 and not conv_box_head
    cascade = "roi_heads.box_predictor.0.cls_score.weight" in state
    if cascade and conv_box_head:
        raise ValueError("Detectron2 Cascade R-CNN with conv box heads is not supported: only the model zoo's "
                         "two-fc cascade stages (Misc/cascade_mask_rcnn_R_50_FPN_*).")
    masks = "roi_heads.mask_predictor.mask_fcn_logits.weight" in state
    keypoints = "roi_heads.keypoint_predictor.kps_score_lowres.weight" in state
    if keypoints and (masks or cascade or conv_box_head):
        raise ValueError("Detectron2 keypoint head next to a mask head, cascade stages or a conv box head: only the "
                         "model zoo's Keypoint R-CNN (COCO-Keypoints/keypoint_rcnn_*: two-fc box head) is supported.")
    first = "roi_heads.box_predictor.0." if cascade else "roi_heads.box_predictor."
    num_classes = int(state[f"{first}cls_score.weight"].shape[0]) - 1
    model = _merge(DETECTRON2_MODEL_SETTINGS, {
        "fpn": {"out_channels": int(state["backbone.fpn.lateral_convs.0.0.weight"].shape[0]),
                "norm": norm_kind(state, "backbone.fpn.lateral_convs.0.1.")},
        "roi_heads": {"fc_dim": int(state[f"roi_heads.box_head.{'0.' if cascade else ''}fc1.weight"].shape[0])},
    })
    if conv_box_head:
        model = _merge(model, _conv_box_head_fields(state, box_conv_norm))
    if cascade:
        _check_cascade(state, num_classes)
    else:
        box_outputs = int(state["roi_heads.box_predictor.bbox_pred.weight"].shape[0])
        if box_outputs != 4 * num_classes:
            raise ValueError(f"Detectron2 bbox_pred has {box_outputs} outputs for {num_classes} classes; only "
                             "class-specific regression (4 per foreground class) is supported.")
    if masks:
        model["roi_heads"].update(_mask_fields(state, num_classes))
    # A conv box head is the v2 options' layout (conf/model/*_v2.yaml), its norms and RPN depth set above.
    model["name"] = {(False, False): "faster_rcnn_fpn", (False, True): "mask_rcnn_fpn",
                     (True, False): "cascade_rcnn_fpn", (True, True): "cascade_mask_rcnn_fpn"}[cascade, masks]
    if conv_box_head:
        model["name"] += "_v2"
    if keypoints:
        model = _merge(model, DETECTRON2_KEYPOINT_SETTINGS)
        model["roi_heads"].update(keypoint_fields(state))
        model["name"] = "keypoint_rcnn_fpn"
    if "pixel_mean" in extra and "pixel_std" in extra:
        model["input"]["pixel_mean"] = [float(v) / 255.0 for v in np.asarray(extra["pixel_mean"]).reshape(-1)]
        model["input"]["pixel_std"] = [float(v) / 255.0 for v in np.asarray(extra["pixel_std"]).reshape(-1)]
    names = list(COCO_NAMES) if num_classes == 80 else (["person"] if keypoints and num_classes == 1 else None)
    return state, backbone, model, num_classes, names


def _check_cascade(state: Mapping[str, torch.Tensor], num_classes: int) -> None:
    """conf/model/cascade_rcnn_fpn's stages: three, each predicting K+1 scores and one box."""
    stages = numbered(state, r"^roi_heads\.box_predictor\.(\d+)\.")
    if stages != list(range(CASCADE_STAGES)):
        raise ValueError(f"Detectron2 cascade with stages {stages}: only the model zoo's three stages "
                         f"(roi_heads.box_predictor.0..2, IoU 0.5 / 0.6 / 0.7) are supported.")
    for stage in stages:
        scores = int(state[f"roi_heads.box_predictor.{stage}.cls_score.weight"].shape[0])
        deltas = int(state[f"roi_heads.box_predictor.{stage}.bbox_pred.weight"].shape[0])
        if scores != num_classes + 1 or deltas != 4:
            raise ValueError(f"Detectron2 cascade stage {stage} has {scores} class scores and {deltas} box outputs; "
                             f"expected {num_classes + 1} and 4 (class-agnostic regression, CLS_AGNOSTIC_BBOX_REG).")


def _conv_box_head_fields(state: Mapping[str, torch.Tensor], norm: bool) -> dict:
    """model fields of FastRCNNConvFCHead with convs then one fc, read off its (renamed) weights."""
    step = 3 if norm else 2
    convs = sorted(int(k.split(".")[3]) // step for k in state
                   if re.match(r"^roi_heads\.box_head\.convs\.\d+\.weight$", k) and int(k.split(".")[3]) % step == 0)
    if convs != list(range(len(convs))) or "roi_heads.box_head.fc2.weight" in state:
        raise ValueError("Detectron2 box head with convs and more than one fc (or conv numbers with gaps): only "
                         "NUM_CONV convs then NUM_FC 1, as in the model zoo's 4conv1fc recipes, are supported.")
    rpn_convs = len([k for k in state if re.match(r"^rpn\.head\.convs\.\d+\.weight$", k)])
    return {
        "rpn": {"conv_depth": rpn_convs},
        "roi_heads": {"box_head": {"num_convs": len(convs)},
                      "conv_dim": int(state["roi_heads.box_head.convs.0.weight"].shape[0]),
                      "conv_norm": norm_kind(state, "roi_heads.box_head.convs.1.") if norm else ""},
    }


def _mask_fields(state: Mapping[str, torch.Tensor], num_classes: int) -> dict:
    """model.roi_heads fields of MaskRCNNConvUpsampleHead, read off its (renamed) weights."""
    layout = mask_head_layout(state, "Detectron2")
    if layout.outputs != num_classes:
        raise ValueError(f"Detectron2 mask predictor has {layout.outputs} outputs for {num_classes} classes; only "
                         "class-specific masks (CLS_AGNOSTIC_MASK false) are supported.")
    # Detectron2's mask convs are 3x3, dilation 1, with a bias, or a norm instead (ROI_MASK_HEAD.NORM).
    # Its masks were learned on the box's own 28x28 grid (targets cropped with aligned RoIAlign
    # or rasterized in box coordinates) and are pasted back on it (mask_ops._do_paste_mask).
    return {**layout.fields(), "mask_paste": "detectron2"}


def _merge(base: dict, update: dict) -> dict:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in update.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged
