"""Feature pyramid network on top of a ResNet body: P2..P5 from res2..res5, plus P6.

Layout: `lateral_convs[i]` (1x1) and `output_convs[i]` (3x3), index 0 being the finest
level. torchvision's `fpn.inner_blocks.i.0` / `fpn.layer_blocks.i.0` and Detectron2's
`fpn_lateral{k}` / `fpn_output{k}` map onto these one-to-one (see detector/weights).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detector.modeling.backbone.folded_conv import conv_with_post_ops
from detector.modeling.backbone.norm import GROUP_NORM_GROUPS


class ConvNorm(nn.Sequential):
    """A convolution, optionally followed by GroupNorm (then the conv has no bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str):
        if norm not in ("", "gn"):
            raise ValueError(f"model.fpn.norm='{norm}' is not supported; valid choices: '' (none), 'gn'.")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm == "")
        ]
        if norm == "gn":
            layers.append(nn.GroupNorm(GROUP_NORM_GROUPS, out_channels))
        super().__init__(*layers)


class FPN(nn.Module):
    """Top-down pathway with lateral connections. Input: OrderedDict of bottom-up features
    from fine to coarse, named res{k}; output: OrderedDict p{k} for each input plus one
    extra coarser level p{last+1} made by max-pooling the coarsest output (kernel 1, stride 2)."""

    def __init__(self, in_channels: Sequence[int], in_strides: Sequence[int], out_channels: int = 256,
                 norm: str = "", extra_pool_level: bool = True):
        super().__init__()
        for fine, coarse in zip(in_strides, in_strides[1:]):
            if coarse != 2 * fine:
                raise ValueError(f"FPN needs consecutive backbone stages (strides doubling), got strides {list(in_strides)}; "
                                 "check backbone.out_features.")
        self.lateral_convs = nn.ModuleList(ConvNorm(c, out_channels, 1, norm) for c in in_channels)
        self.output_convs = nn.ModuleList(ConvNorm(out_channels, out_channels, 3, norm) for _ in in_channels)
        self.extra_pool_level = extra_pool_level
        self.out_channels = out_channels
        self.strides = list(in_strides) + ([in_strides[-1] * 2] if extra_pool_level else [])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # "Xavier" fill used by Caffe2/Detectron and torchvision for FPN convolutions.
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, features: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
        names = list(features.keys())
        inputs = list(features.values())
        top_down = self.lateral_convs[-1](inputs[-1])
        results = [self.output_convs[-1](top_down)]
        for index in range(len(inputs) - 2, -1, -1):
            # Upsample to the lateral's exact size (not x2), so odd sizes work too.
            upsampled = F.interpolate(top_down, size=inputs[index].shape[-2:], mode="nearest")
            lateral_conv = self.lateral_convs[index]
            if len(lateral_conv) == 1:
                # lateral + upsampled, as one fused convolution where the CPU offers it
                top_down = conv_with_post_ops(inputs[index], lateral_conv[0], residual=upsampled)
            else:
                top_down = lateral_conv(inputs[index]) + upsampled
            results.insert(0, self.output_convs[index](top_down))
        out_names = ["p" + name[len("res"):] for name in names]
        if self.extra_pool_level:
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
            out_names.append(f"p{int(out_names[-1][1:]) + 1}")
        return OrderedDict(zip(out_names, results))


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
