"""The feature pyramid of the one-stage detectors: P3..P5 from res3..res5, plus P6 and P7 made
by strided 3x3 convolutions.

RetinaNet and FCOS predict on P3..P7: dropping P2 saves most of the dense heads' cost (P2 alone
has more locations than all the other levels together), and P6/P7 add the coarse levels large
objects need. Where P6 comes from is a setting, because the references differ:
torchvision's `retinanet_resnet50_fpn` and `fcos_resnet50_fpn` convolve P5 (`p5`), its
`retinanet_resnet50_fpn_v2` and Detectron2's RetinaNet convolve the backbone's res5 (`c5`).
P7 is always a strided convolution of ReLU(P6).

Parameter names: the FPN's own (`lateral_convs`, `output_convs`) plus `p6` and `p7`; torchvision's
`fpn.extra_blocks.p6/p7` and Detectron2's `top_block.p6/p7` map onto them (detector/weights).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detector.modeling.backbone.fpn import FPN

P6_SOURCES = ("p5", "c5")


class FPNWithP6P7(FPN):
    """FPN over the given backbone features, without the max-pooled level, then P6 and P7."""

    def __init__(self, in_channels: Sequence[int], in_strides: Sequence[int], out_channels: int = 256,
                 norm: str = "", p6_source: str = "p5", fold_norms: bool = True):
        if p6_source not in P6_SOURCES:
            raise ValueError(f"model.fpn.p6_source='{p6_source}'; valid choices: {', '.join(P6_SOURCES)} "
                             "(torchvision v1 and FCOS: p5; torchvision v2 and Detectron2: c5).")
        super().__init__(in_channels, in_strides, out_channels, norm, extra_pool_level=False, fold_norms=fold_norms)
        self.p6_source = p6_source
        self.p6 = nn.Conv2d(in_channels[-1] if p6_source == "c5" else out_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)   # the FPN's "Xavier" fill, as the references
            nn.init.zeros_(conv.bias)
        self.strides = self.strides + [self.strides[-1] * 2, self.strides[-1] * 4]

    def forward(self, features: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
        pyramid = super().forward(features)
        source = next(reversed(pyramid.values())) if self.p6_source == "p5" else next(reversed(features.values()))
        p6 = self.p6(source)
        p7 = self.p7(F.relu(p6))
        levels = [*pyramid.values(), p6, p7]
        return OrderedDict(zip(self.level_names, levels))


class BackboneWithSelectedFPN(nn.Module):
    """`body` (a ResNet) whose `in_features` (e.g. res3, res4, res5) feed `fpn`. The body may
    return more (res2 with the backbone files' default out_features); those are not used."""

    def __init__(self, body: nn.Module, fpn: nn.Module, in_features: Sequence[str]):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.in_features = list(in_features)
        self.out_channels = fpn.out_channels
        self.strides = fpn.strides

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = self.body(images)
        return self.fpn(OrderedDict((name, features[name]) for name in self.in_features))
