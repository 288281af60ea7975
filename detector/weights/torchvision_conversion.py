"""torchvision weights -> this project's parameter names.

Detection: a `fasterrcnn_resnet50_fpn` state dict, or any torchvision `FasterRCNN` built on
`resnet_fpn_backbone` (the depth is read off the weights). Classification: an ImageNet
ResNet/ResNeXt state dict, which becomes backbone weights.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from detector.weights.coco_classes import COCO_IDS, COCO_NAMES, names_by_category_id
from detector.weights.resnet_layout import infer_resnet_config

# What torchvision's detection models do, expressed in this project's config.
TORCHVISION_DETECTION_SETTINGS = {
    # Pretrained torchvision detectors use FrozenBatchNorm2d and train layer2..layer4 only.
    "backbone": {"norm": "frozen_bn", "freeze_at": 2, "stride_in_1x1": False},
    "model": {},   # conf/model/faster_rcnn_fpn.yaml's defaults are torchvision's
}

_RENAMES = [
    (r"^backbone\.body\.", "backbone.body."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"backbone.fpn.lateral_convs.\1.0."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"backbone.fpn.output_convs.\1.0."),
    (r"^rpn\.head\.conv\.(\d+)\.0\.", r"rpn.head.convs.\1."),
    # Layouts of torchvision releases before Conv2dNormActivation wrapped these convs.
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.(weight|bias)$", r"backbone.fpn.lateral_convs.\1.0.\2"),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.(weight|bias)$", r"backbone.fpn.output_convs.\1.0.\2"),
    (r"^rpn\.head\.conv\.(weight|bias)$", r"rpn.head.convs.0.\1"),
    (r"^rpn\.head\.cls_logits\.", "rpn.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "rpn.head.deltas."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_heads.box_head.fc1."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_heads.box_head.fc2."),
    (r"^roi_heads\.box_predictor\.", "roi_heads.box_predictor."),
]


def is_torchvision_detection(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("backbone.body.") for k in state) and any(k.startswith("rpn.head.") for k in state)


def is_torchvision_classification(state: Mapping[str, torch.Tensor]) -> bool:
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state


def rename_torchvision_detection(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _RENAMES:
            if re.match(pattern, key):
                renamed[re.sub(pattern, replacement, key)] = value
                break
        else:
            raise ValueError(f"unexpected key '{key}' in the torchvision detection state dict: only the Faster R-CNN "
                             "ResNet-FPN layout (backbone.body/fpn, rpn.head, roi_heads.box_head fc6/fc7, "
                             "box_predictor) is supported.")
    return renamed


def convert_torchvision_detection(state: Mapping[str, torch.Tensor], coco80: bool = False):
    """Returns (state dict, backbone fields, model fields, num_classes, class_names)."""
    if "roi_heads.box_head.fc6.weight" not in state:
        raise ValueError("only the two-FC box head (fc6/fc7) of torchvision's Faster R-CNN is supported.")
    backbone = {**infer_resnet_config(state, "backbone.body."), **TORCHVISION_DETECTION_SETTINGS["backbone"]}
    renamed = {k: v for k, v in rename_torchvision_detection(state).items() if not k.endswith("num_batches_tracked")}
    num_outputs = int(renamed["roi_heads.box_predictor.cls_score.weight"].shape[0])
    num_classes = num_outputs - 1
    model = {
        "fpn": {"out_channels": int(renamed["backbone.fpn.lateral_convs.0.0.weight"].shape[0])},
        "rpn": {"conv_depth": len({k.split(".")[3] for k in renamed if k.startswith("rpn.head.convs.")})},
        "roi_heads": {"fc_dim": int(renamed["roi_heads.box_head.fc1.weight"].shape[0])},
    }
    names = names_by_category_id(num_classes) if num_classes == 90 else None
    if coco80:
        if num_classes != 90:
            raise ValueError(f"--coco80 needs torchvision's COCO layout (91 class outputs), got {num_outputs}.")
        # Keep background and the 80 used category ids, in id order: labels become 1..80.
        rows = torch.tensor([0] + COCO_IDS)
        box_rows = (rows[:, None] * 4 + torch.arange(4)).reshape(-1)
        for name in ("weight", "bias"):
            renamed[f"roi_heads.box_predictor.cls_score.{name}"] = renamed[f"roi_heads.box_predictor.cls_score.{name}"][rows]
            renamed[f"roi_heads.box_predictor.bbox_pred.{name}"] = renamed[f"roi_heads.box_predictor.bbox_pred.{name}"][box_rows]
        num_classes, names = 80, list(COCO_NAMES)
    return renamed, backbone, model, num_classes, names


def convert_torchvision_classification(state: Mapping[str, torch.Tensor]):
    """ImageNet ResNet/ResNeXt -> (backbone state dict without fc, backbone fields)."""
    backbone = {**infer_resnet_config(state, ""), "stride_in_1x1": False}
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return body, backbone
