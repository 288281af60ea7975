"""The dense heads of the one-stage detectors: a classification tower and a box tower shared by
every pyramid level, each of `num_convs` 3x3 conv [+ norm] + ReLU blocks, then a 3x3 conv giving
K class logits per anchor (classification) and 4 box numbers per anchor (box); FCOS adds one
centerness logit per location on the box tower.

RetinaNet (v1: no norm; v2: GroupNorm, convs without bias) and FCOS (GroupNorm after convs that
keep their bias) differ only in those settings, so one module serves both. Names: tower block i is
`cls_convs.i` / `box_convs.i` (`.0` conv, `.1` norm), then `cls_logits`, `bbox_pred`, `centerness`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detector.modeling.backbone.norm import make_norm

HEAD_NORMS = ("", "gn", "bn")
BOX_ACTIVATIONS = ("none", "relu")


def _tower(channels: int, num_convs: int, norm: str, conv_bias: bool) -> nn.ModuleList:
    blocks = []
    for _ in range(num_convs):
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1, bias=conv_bias)]
        if norm:
            layers.append(make_norm(norm, channels))
        blocks.append(nn.Sequential(*layers))
    return nn.ModuleList(blocks)


def _flatten_level(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """[N, A*C, H, W] -> [N, H*W*A, C]: location-major, anchors inner, as the anchors are ordered."""
    n, _, height, width = x.shape
    return x.view(n, -1, per_anchor, height, width).permute(0, 3, 4, 1, 2).reshape(n, -1, per_anchor)


class DenseHead(nn.Module):
    """Per level: class logits [N, H*W*A, K], box outputs [N, H*W*A, 4] and, with centerness,
    [N, H*W*A, 1]. The class bias starts at -log((1 - p) / p) (p = prior_probability), so early
    training is not swamped by the easy background, as in the focal loss paper."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4, norm: str = "",
                 conv_bias: bool = True, centerness: bool = False, box_activation: str = "none",
                 prior_probability: float = 0.01):
        super().__init__()
        if norm not in HEAD_NORMS:
            raise ValueError(f"model.head.norm='{norm}'; valid choices: '' (none), gn, bn.")
        if box_activation not in BOX_ACTIVATIONS:
            raise ValueError(f"model.head.box_activation='{box_activation}'; valid choices: {', '.join(BOX_ACTIVATIONS)}.")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.box_activation = box_activation
        self.cls_convs = _tower(in_channels, num_convs, norm, conv_bias)
        self.box_convs = _tower(in_channels, num_convs, norm, conv_bias)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, num_anchors, 3, padding=1) if centerness else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))

    @staticmethod
    def _run_tower(tower: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for block in tower:
            x = F.relu(block(x))
        return x

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        logits, boxes, centerness = [], [], []
        for feature in features:
            cls_x = self._run_tower(self.cls_convs, feature)
            logits.append(_flatten_level(self.cls_logits(cls_x), self.num_classes))
            box_x = self._run_tower(self.box_convs, feature)
            box = self.bbox_pred(box_x)
            if self.box_activation == "relu":   # FCOS: distances to the box edges are never negative
                box = F.relu(box)
            boxes.append(_flatten_level(box, 4))
            if self.centerness is not None:
                centerness.append(_flatten_level(self.centerness(box_x), 1))
        outputs = {"cls_logits": logits, "bbox_regression": boxes}
        if self.centerness is not None:
            outputs["centerness"] = centerness
        return outputs
