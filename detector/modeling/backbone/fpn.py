"""Feature pyramid network on top of a ResNet body: P2..P5 from res2..res5, plus P6.

Layout: `lateral_convs[i]` (1x1) and `output_convs[i]` (3x3), index 0 being the finest
level, each a conv optionally followed by a norm (`.0`, `.1`). torchvision's
`fpn.inner_blocks.i.{0,1}` / `fpn.layer_blocks.i.{0,1}` and Detectron2's `fpn_lateral{k}` /
`fpn_output{k}` map onto these one-to-one (see detector/weights).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detector.modeling.backbone.folded_conv import conv_with_post_ops
from detector.modeling.backbone.norm import NORM_CHOICES, conv_norm, make_norm


class ConvNorm(nn.Sequential):
    """A convolution, optionally followed by a norm (then the conv has no bias): GroupNorm
    (Detectron2's GN recipes) or BatchNorm (torchvision's fasterrcnn_resnet50_fpn_v2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str):
        if norm != "" and norm not in NORM_CHOICES:
            raise ValueError(f"model.fpn.norm='{norm}' is not supported; valid choices: '' (none), "
                             f"{', '.join(NORM_CHOICES)}.")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm == "")
        ]
        if norm:
            layers.append(make_norm(norm, out_channels))
        super().__init__(*layers)

    def run(self, x: torch.Tensor, fold: bool, residual: torch.Tensor | None = None) -> torch.Tensor:
        """self(x) (+ residual). A BatchNorm in eval mode is folded into the convolution when
        `fold`; without a norm, oneDNN fuses the add into the convolution on the CPU."""
        if len(self) == 1:
            return self[0](x) if residual is None else conv_with_post_ops(x, self[0], residual=residual)
        return conv_norm(self[0], self[1], x, fold, residual=residual)


class FPN(nn.Module):
    """Top-down pathway with lateral connections. Input: OrderedDict of bottom-up features
    from fine to coarse (any names; their strides double from one to the next); output:
    OrderedDict p{k} for each input of stride 2**k plus one extra coarser level p{last+1} made
    by max-pooling the coarsest output (kernel 1, stride 2)."""

    def __init__(self, in_channels: Sequence[int], in_strides: Sequence[int], out_channels: int = 256,
                 norm: str = "", extra_pool_level: bool = True, fold_norms: bool = True):
        super().__init__()
        for fine, coarse in zip(in_strides, in_strides[1:]):
            if coarse != 2 * fine:
                raise ValueError(f"FPN needs consecutive backbone stages (strides doubling), got strides {list(in_strides)}; "
                                 "check backbone.out_features.")
        self.lateral_convs = nn.ModuleList(ConvNorm(c, out_channels, 1, norm) for c in in_channels)
        self.output_convs = nn.ModuleList(ConvNorm(out_channels, out_channels, 3, norm) for _ in in_channels)
        self.extra_pool_level = extra_pool_level
        # Norms in eval mode folded into the convolutions (see norm.conv_norm); False keeps
        # torchvision's order of operations, for parity tests.
        self.fold_norms = fold_norms
        self.out_channels = out_channels
        self.strides = list(in_strides) + ([in_strides[-1] * 2] if extra_pool_level else [])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # "Xavier" fill used by Caffe2/Detectron and torchvision for FPN convolutions.
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, features: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
        inputs = list(features.values())
        fold = self.fold_norms
        top_down = self.lateral_convs[-1].run(inputs[-1], fold)
        results = [self.output_convs[-1].run(top_down, fold)]
        for index in range(len(inputs) - 2, -1, -1):
            # Upsample to the lateral's exact size (not x2), so odd sizes work too.
            upsampled = F.interpolate(top_down, size=inputs[index].shape[-2:], mode="nearest")
            # lateral + upsampled, as one convolution where the norm folds or the CPU fuses the add
            top_down = self.lateral_convs[index].run(inputs[index], fold, residual=upsampled)
            results.insert(0, self.output_convs[index].run(top_down, fold))
        if self.extra_pool_level:
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return OrderedDict(zip(self.level_names, results))

    @property
    def level_names(self) -> list[str]:
        """p{k} for stride 2**k, whatever the backbone calls its features (res2 -> p2, ...)."""
        return [f"p{stride.bit_length() - 1}" for stride in self.strides]


class BackboneWithFPN(nn.Module):
    """`body` (a ResNet) followed by `fpn`. `strides` lists each output level's stride."""

    def __init__(self, body: nn.Module, fpn: FPN):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = fpn.out_channels
        self.strides = fpn.strides

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.body(images))
