"""Detectron2 model-zoo Faster R-CNN R50/R101-FPN weights -> this project's names and config.

Detectron2 differs from torchvision in ways that change the outputs, so the converted
config reproduces each: BGR input on the 0..255 scale (mean [103.53, 116.28, 123.675],
std 1), the stride in the first 1x1 conv of each bottleneck (MSRA ResNet), aligned
RoIAlign with adaptive sampling, unrounded anchors at fixed strides, background as the
last class score and box deltas for foreground classes only.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import torch

from detector.weights.coco_classes import COCO_NAMES
from detector.weights.resnet_layout import infer_resnet_config

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
    "rpn": {"post_nms_topk_train": 1000, "min_box_size": 0.0},
    "roi_heads": {
        "pooler_aligned": True,
        "pooler_sampling_ratio": 0,
        "predictor_layout": "detectron2",
        "min_box_size": 0.0,
    },
}

# Keys that carry no weights (older files saved these buffers).
_IGNORED = re.compile(r"^(pixel_mean|pixel_std)$|anchor_generator\.cell_anchors")

_RENAMES = [
    (r"^backbone\.bottom_up\.stem\.conv1\.weight$", "backbone.body.conv1.weight"),
    (r"^backbone\.bottom_up\.stem\.conv1\.norm\.", "backbone.body.bn1."),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight$", None),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)$", None),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.weight$", None),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.(\w+)$", None),
    (r"^backbone\.fpn_lateral(\d)\.(weight|bias)$", None),
    (r"^backbone\.fpn_output(\d)\.(weight|bias)$", None),
    (r"^proposal_generator\.rpn_head\.conv\.(weight|bias)$", r"rpn.head.convs.0.\1"),
    (r"^proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)$", r"rpn.head.objectness.\1"),
    (r"^proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)$", r"rpn.head.deltas.\1"),
    (r"^roi_heads\.box_head\.fc([12])\.(weight|bias)$", r"roi_heads.box_head.fc\1.\2"),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", r"roi_heads.box_predictor.\1.\2"),
]


def detectron2_key_to_ours(key: str) -> str:
    for pattern, replacement in _RENAMES:
        match = re.match(pattern, key)
        if match is None:
            continue
        if replacement is not None:
            return re.sub(pattern, replacement, key)
        groups = match.groups()
        if ".fpn_lateral" in key or ".fpn_output" in key:
            kind = "lateral_convs" if ".fpn_lateral" in key else "output_convs"
            return f"backbone.fpn.{kind}.{int(groups[0]) - 2}.0.{groups[1]}"
        stage, block = int(groups[0]), groups[1]
        prefix = f"backbone.body.layer{stage - 1}.{block}"
        if ".shortcut." in key:
            return f"{prefix}.downsample.0.weight" if key.endswith("shortcut.weight") else f"{prefix}.downsample.1.{groups[2]}"
        conv = groups[2]
        return f"{prefix}.conv{conv}.weight" if key.endswith(f"conv{conv}.weight") else f"{prefix}.bn{conv}.{groups[3]}"
    raise ValueError(f"unexpected key '{key}' in the Detectron2 checkpoint: only Faster R-CNN with a ResNet-FPN "
                     "backbone, StandardRPNHead and the two-FC box head is supported.")


def convert_detectron2(checkpoint: Mapping):
    """Returns (state dict, backbone fields, model fields, num_classes, class_names)."""
    weights = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("the Detectron2 file holds no 'model' dict of arrays.")
    state, extra = {}, {}
    for key, value in weights.items():
        if _IGNORED.search(key):
            extra[key] = value
            continue
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"Detectron2 key '{key}' holds {array.dtype}, expected a numeric array.")
        state[detectron2_key_to_ours(key)] = torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32)
    backbone = {**infer_resnet_config(state, "backbone.body."), "norm": "frozen_bn", "freeze_at": 2}
    # The model zoo's MSRA ResNets stride in the 1x1 conv; its ResNeXts (FB weights) do not.
    backbone["stride_in_1x1"] = backbone["groups"] == 1
    num_classes = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0]) - 1
    box_outputs = int(state["roi_heads.box_predictor.bbox_pred.weight"].shape[0])
    if box_outputs != 4 * num_classes:
        raise ValueError(f"Detectron2 bbox_pred has {box_outputs} outputs for {num_classes} classes; only "
                         "class-specific regression (4 per foreground class) is supported.")
    model = _merge(DETECTRON2_MODEL_SETTINGS, {
        "fpn": {"out_channels": int(state["backbone.fpn.lateral_convs.0.0.weight"].shape[0])},
        "roi_heads": {"fc_dim": int(state["roi_heads.box_head.fc1.weight"].shape[0])},
    })
    if "pixel_mean" in extra and "pixel_std" in extra:
        model["input"]["pixel_mean"] = [float(v) / 255.0 for v in np.asarray(extra["pixel_mean"]).reshape(-1)]
        model["input"]["pixel_std"] = [float(v) / 255.0 for v in np.asarray(extra["pixel_std"]).reshape(-1)]
    names = list(COCO_NAMES) if num_classes == 80 else None
    return state, backbone, model, num_classes, names


def _merge(base: dict, update: dict) -> dict:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in update.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged
