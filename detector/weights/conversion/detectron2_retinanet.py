"""Detectron2 model-zoo RetinaNet weights (COCO-Detection/retinanet_R_50_FPN_1x|3x, or any
Detectron2 RetinaNet on a ResNet-FPN) -> this project's names and config (model=retinanet_fpn).

Detectron2's names (detectron2/modeling/meta_arch/retinanet.py, backbone/fpn.py):
`backbone.bottom_up.*` (the MSRA ResNet, renamed as for its R-CNNs), `backbone.fpn_lateral{3,4,5}`
/ `backbone.fpn_output{3,4,5}`, `backbone.top_block.p6/p7` (LastLevelP6P7 on res5),
`head.cls_subnet.*` / `head.bbox_subnet.*` (a Sequential of conv, [norm,] ReLU per block),
`head.cls_score`, `head.bbox_pred`.

Its anchors are ordered size-major within a location (for each size, each aspect ratio), where
this project (and torchvision) orders them aspect-ratio-major, so the output convolutions' anchor
blocks are permuted here. What else differs, and the converted config reproduces: BGR input
on the 0..255 scale, MSRA ResNet (stride in the 1x1 conv), unrounded anchor sizes x * 2**(i/3),
fixed strides 8..128, 100 detections, NMS on unclipped boxes (clipped afterwards), the loss
normaliser as a moving average of the batch's foreground count, and the box loss of the model
zoo's configs (see DETECTRON2_RETINANET_BETA).
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import torch

from detector.weights.conversion.coco_classes import COCO_NAMES
from detector.weights.conversion.detectron2_conversion import (DETECTRON2_MODEL_SETTINGS, detectron2_key_to_ours,
                                                               renamed_float_arrays)
from detector.weights.conversion.head_layout import norm_kind, numbered
from detector.weights.conversion.resnet_layout import infer_resnet_config

ASPECT_RATIOS = (0.5, 1.0, 2.0)   # Detectron2's ANCHOR_GENERATOR.ASPECT_RATIOS
# Base-RetinaNet.yaml's sizes: [[x, x * 2**(1/3), x * 2**(2/3)] for x in 32, 64, ..., 512].
ANCHOR_SIZES = [[x * 2 ** (i / 3) for i in range(3)] for x in (32, 64, 128, 256, 512)]
# Box loss beta: config/defaults.py has MODEL.RETINANET.SMOOTH_L1_LOSS_BETA 0.1, but
# configs/Base-RetinaNet.yaml, which every model-zoo RetinaNet config inherits (the 37.4 / 38.7 AP
# files, retrained in 2020), sets 0.0: smooth L1 with beta 0, i.e. plain L1.
DETECTRON2_RETINANET_BETA = 0.0

DETECTRON2_RETINANET_SETTINGS = {
    "name": "retinanet_fpn",
    "input": DETECTRON2_MODEL_SETTINGS["input"],
    "anchor_generator": {"sizes": ANCHOR_SIZES, "aspect_ratios": list(ASPECT_RATIOS), "round_anchors": False,
                         "strides": [8, 16, 32, 64, 128], "octave_scales": None},
    "fpn": {"p6_source": "c5"},
    "head_loss": {"box_loss": "smooth_l1", "smooth_l1_beta": DETECTRON2_RETINANET_BETA, "normalizer": "batch_ema"},
    "postprocess": {"detections_per_img": 100, "clip_before_nms": False},
}


def is_detectron2_retinanet(weights: Mapping) -> bool:
    return "head.cls_score.weight" in weights and any(str(k).startswith("backbone.bottom_up.") for k in weights)


def _our_name(key: str, norm: bool) -> str:
    if key.startswith("backbone.bottom_up."):
        return detectron2_key_to_ours(key)
    match = re.match(r"^backbone\.fpn_(lateral|output)(\d)(?:\.(weight|bias)|\.norm\.(\w+))$", key)
    if match:
        kind, level, param, norm_param = match.groups()
        return f"backbone.fpn.{kind}_convs.{int(level) - 3}." + (f"1.{norm_param}" if norm_param else f"0.{param}")
    match = re.match(r"^backbone\.top_block\.(p6|p7)\.(weight|bias)$", key)
    if match:
        return f"backbone.fpn.{match.group(1)}.{match.group(2)}"
    match = re.match(r"^head\.(cls|bbox)_subnet\.(\d+)\.(\w+)$", key)
    if match:
        tower = "cls_convs" if match.group(1) == "cls" else "box_convs"
        index, step = int(match.group(2)), 3 if norm else 2   # conv, [norm,] ReLU
        return f"head.{tower}.{index // step}.{index % step}.{match.group(3)}"
    match = re.match(r"^head\.(cls_score|bbox_pred)\.(weight|bias)$", key)
    if match:
        return f"head.{'cls_logits' if match.group(1) == 'cls_score' else 'bbox_pred'}.{match.group(2)}"
    raise ValueError(f"unexpected key '{key}' in the Detectron2 RetinaNet checkpoint: only RetinaNet with a ResNet-FPN "
                     "backbone (bottom_up, fpn_lateral/output 3..5, top_block.p6/p7) and RetinaNetHead "
                     "(cls_subnet, bbox_subnet, cls_score, bbox_pred) is supported.")


def anchor_order(num_sizes: int, num_ratios: int) -> torch.Tensor:
    """For each anchor of this project's order (ratio r major, size s minor), its index in
    Detectron2's (size major): our r * S + s <- Detectron2's s * R + r."""
    return torch.tensor([s * num_ratios + r for r in range(num_ratios) for s in range(num_sizes)])


def _permute_anchors(state: dict[str, torch.Tensor], key: str, num_anchors: int, order: torch.Tensor) -> None:
    value = state[key]
    blocks = value.view(num_anchors, -1, *value.shape[1:])
    state[key] = blocks[order].reshape(value.shape).contiguous()


def convert_detectron2_retinanet(checkpoint: Mapping):
    """Returns (state dict, backbone fields, model fields, num_classes, class_names)."""
    weights = checkpoint.get("model", checkpoint)
    norm = any(re.match(r"^head\.cls_subnet\.1\.(weight|bias)$", str(k)) for k in weights)
    state, extra = renamed_float_arrays(weights, lambda key: _our_name(key, norm))
    num_anchors = int(state["head.bbox_pred.weight"].shape[0]) // 4
    if num_anchors != len(ASPECT_RATIOS) * len(ANCHOR_SIZES[0]):
        raise ValueError(f"Detectron2 RetinaNet with {num_anchors} anchors per location: only the model zoo's "
                         f"{len(ANCHOR_SIZES[0])} sizes x {len(ASPECT_RATIOS)} aspect ratios are supported.")
    order = anchor_order(len(ANCHOR_SIZES[0]), len(ASPECT_RATIOS))
    for key in ("head.cls_logits.weight", "head.cls_logits.bias", "head.bbox_pred.weight", "head.bbox_pred.bias"):
        _permute_anchors(state, key, num_anchors, order)
    num_classes = int(state["head.cls_logits.weight"].shape[0]) // num_anchors
    backbone = {**infer_resnet_config(state, "backbone.body."), "freeze_at": 2,
                "norm": "gn" if norm_kind(state, "backbone.body.bn1.") == "gn" else "frozen_bn"}
    # The model zoo's MSRA ResNets stride in the 1x1 conv; its ResNeXts (FB weights) do not.
    backbone["stride_in_1x1"] = backbone["groups"] == 1
    head_norm = norm_kind(state, "head.cls_convs.0.1.")
    model = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DETECTRON2_RETINANET_SETTINGS.items()}
    model["input"] = dict(model["input"])
    model["fpn"] = {**model["fpn"], "out_channels": int(state["backbone.fpn.lateral_convs.0.0.weight"].shape[0]),
                    "norm": norm_kind(state, "backbone.fpn.lateral_convs.0.1.")}
    model["head"] = {"num_convs": len(numbered(state, r"^head\.cls_convs\.(\d+)\.0\.weight$")), "norm": head_norm,
                     "conv_bias": "head.cls_convs.0.0.bias" in state}
    if "pixel_mean" in extra and "pixel_std" in extra:
        model["input"]["pixel_mean"] = [float(v) / 255.0 for v in np.asarray(extra["pixel_mean"]).reshape(-1)]
        model["input"]["pixel_std"] = [float(v) / 255.0 for v in np.asarray(extra["pixel_std"]).reshape(-1)]
    return state, backbone, model, num_classes, list(COCO_NAMES) if num_classes == 80 else None
