"""torchvision's one-stage detectors -> this project's names and config: `retinanet_resnet50_fpn`
(model=retinanet_fpn), `retinanet_resnet50_fpn_v2` (retinanet_fpn_v2) and `fcos_resnet50_fpn`
(fcos_fpn), or any torchvision RetinaNet / FCOS on `_resnet_fpn_extractor` with P6/P7 (the depth,
widths and head norm read off the weights).

Told apart by their keys: FCOS has `head.regression_head.bbox_ctrness`; a RetinaNet whose head
convs carry GroupNorm is v2. Where P6 comes from is read off `p6`'s input channels (the FPN width:
P5; the backbone's: C5).

torchvision's class layer predicts K+1 columns per anchor, column 0 being a background that is
never trained as positive; here the head predicts K (labels 1..K, as the focal loss needs no
background), so that column is dropped: label L stays label L. Files saved before torchvision
wrapped the head convs (the published retinanet_resnet50_fpn, `conv.0/2/4/6`) are read too.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from detector.weights.conversion.coco_classes import COCO_IDS, COCO_NAMES, names_by_category_id
from detector.weights.conversion.head_layout import norm_kind, numbered
from detector.weights.conversion.resnet_layout import infer_resnet_config

# Published torchvision RetinaNet v1 and FCOS use FrozenBatchNorm2d and train layer2..layer4;
# RetinaNet v2 builds its ResNet with plain BatchNorm2d (also when pretrained), same layers trained.
_BACKBONE = {"norm": "frozen_bn", "freeze_at": 2, "stride_in_1x1": False}
_BACKBONE_V2 = {"norm": "bn", "freeze_at": 2, "stride_in_1x1": False}

_TOWERS = {"classification_head": "cls_convs", "regression_head": "box_convs"}
_OUTPUTS = {
    "head.classification_head.cls_logits.": "head.cls_logits.",
    "head.regression_head.bbox_reg.": "head.bbox_pred.",
    "head.regression_head.bbox_ctrness.": "head.centerness.",
}


def is_torchvision_dense(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("backbone.body.") for k in state) and "head.classification_head.cls_logits.weight" in state


def _tower_name(key: str, layout: str) -> str | None:
    """Our name of a tower key: `layout` "wrapped" (conv.i.0 conv, conv.i.1 norm: RetinaNet),
    "flat" (conv.3i conv, conv.3i+1 norm: FCOS) or "plain" (conv.2i conv: pre-v2 RetinaNet files)."""
    match = re.match(r"^head\.(classification_head|regression_head)\.conv\.(\d+)\.(?:(\d+)\.)?(weight|bias)$", key)
    if match is None:
        return None
    tower, index, part, param = _TOWERS[match.group(1)], int(match.group(2)), match.group(3), match.group(4)
    if layout == "wrapped" and part is not None:
        return f"head.{tower}.{index}.{part}.{param}"
    if layout == "flat" and part is None:
        return f"head.{tower}.{index // 3}.{index % 3}.{param}"
    if layout == "plain" and part is None:
        return f"head.{tower}.{index // 2}.0.{param}"
    return None


def _rename(state: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = None
        if key.startswith("backbone.body."):
            name = key
        elif match := re.match(r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", key):
            kind = "lateral" if match.group(1) == "inner" else "output"
            name = f"backbone.fpn.{kind}_convs.{match.group(2)}.0.{match.group(3)}"
        elif match := re.match(r"^backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)$", key):
            name = f"backbone.fpn.{match.group(1)}.{match.group(2)}"
        elif any(key.startswith(p) for p in _OUTPUTS):
            prefix = next(p for p in _OUTPUTS if key.startswith(p))
            name = _OUTPUTS[prefix] + key[len(prefix):]
        else:
            name = _tower_name(key, layout)
        if name is None:
            raise ValueError(f"unexpected key '{key}' in the torchvision RetinaNet/FCOS state dict: only the ResNet-FPN "
                             "layouts of retinanet_resnet50_fpn(_v2) and fcos_resnet50_fpn are supported "
                             "(backbone.body/fpn with extra_blocks.p6/p7, head.classification_head and "
                             "head.regression_head).")
        renamed[name] = value
    return renamed


def _tower_layout(state: Mapping[str, torch.Tensor], fcos: bool) -> str:
    if fcos:
        return "flat"
    if "head.classification_head.conv.0.0.weight" in state:
        return "wrapped"
    return "plain"


def _drop_background(renamed: dict[str, torch.Tensor], num_anchors: int, keep: torch.Tensor) -> None:
    """Keep only the class columns `keep` (torchvision's column index) of each anchor's logits."""
    for param in ("weight", "bias"):
        key = f"head.cls_logits.{param}"
        value = renamed[key]
        per_anchor = value.view(num_anchors, -1, *value.shape[1:])
        renamed[key] = per_anchor[:, keep].reshape(-1, *value.shape[1:]).contiguous()


def convert_torchvision_dense(state: Mapping[str, torch.Tensor], coco80: bool = False):
    """Returns (state dict, backbone fields, model fields, num_classes, class_names)."""
    fcos = "head.regression_head.bbox_ctrness.weight" in state
    renamed = _rename(state, _tower_layout(state, fcos))
    head_norm = norm_kind(renamed, "head.cls_convs.0.1.")
    if head_norm == "bn":
        raise ValueError("torchvision RetinaNet/FCOS head with BatchNorm: only no norm (retinanet_resnet50_fpn) or "
                         "GroupNorm (retinanet_resnet50_fpn_v2, fcos_resnet50_fpn) is supported.")
    v2 = not fcos and head_norm == "gn"
    num_anchors = int(renamed["head.bbox_pred.weight"].shape[0]) // 4
    outputs = int(renamed["head.cls_logits.weight"].shape[0]) // num_anchors
    fpn_width = int(renamed["backbone.fpn.lateral_convs.0.0.weight"].shape[0])
    levels = numbered(renamed, r"^backbone\.fpn\.lateral_convs\.(\d+)\.")
    if len(levels) != 3 or "backbone.fpn.p6.weight" not in renamed:
        raise ValueError(f"torchvision RetinaNet/FCOS FPN with {len(levels)} levels from the body and "
                         f"{'a' if 'backbone.fpn.p6.weight' in renamed else 'no'} P6: only layer2..layer4 (P3..P5) "
                         "plus P6/P7 (LastLevelP6P7) are supported.")
    backbone = {**infer_resnet_config(state, "backbone.body."), **(_BACKBONE_V2 if v2 else _BACKBONE)}
    model = {
        "name": "fcos_fpn" if fcos else ("retinanet_fpn_v2" if v2 else "retinanet_fpn"),
        "fpn": {"out_channels": fpn_width,
                "p6_source": "p5" if int(renamed["backbone.fpn.p6.weight"].shape[1]) == fpn_width else "c5"},
        "head": {"num_convs": len(numbered(renamed, r"^head\.cls_convs\.(\d+)\.0\.weight$")), "norm": head_norm,
                 "conv_bias": "head.cls_convs.0.0.bias" in renamed},
    }
    if coco80:
        if outputs != 91:
            raise ValueError(f"--coco80 needs torchvision's COCO layout (91 class outputs), got {outputs}.")
        _drop_background(renamed, num_anchors, torch.tensor(COCO_IDS))
        return renamed, backbone, model, 80, list(COCO_NAMES)
    _drop_background(renamed, num_anchors, torch.arange(1, outputs))
    num_classes = outputs - 1
    return renamed, backbone, model, num_classes, names_by_category_id(num_classes) if num_classes == 90 else None
