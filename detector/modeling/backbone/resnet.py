"""ResNet and ResNeXt bodies that return the outputs of stages res2..res5.

Parameter names follow torchvision's classification ResNet (conv1, bn1, layer1.0.conv1,
..., layer1.0.downsample.0/1), so an ImageNet state dict from torchvision loads with strict
key checking once its `fc.*` entries are set aside. A classifier can subclass `ResNet` and add
pooling and an `fc` layer: its state dict then matches torchvision's one-to-one.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from detector.modeling.backbone.norm import conv_norm, is_batch_norm, make_norm

# Stage names follow Detectron2: res2 is torchvision's layer1 (stride 4) ... res5 is layer4 (stride 32).
STAGE_NAMES = ("res2", "res3", "res4", "res5")
STAGE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}

BLOCKS_PER_DEPTH = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class BasicBlock(nn.Module):
    expansion = 1
    fold_norms = True   # see conv_norm; ResNet(fold_norms=False) turns it off for exact reference numerics

    def __init__(self, in_channels: int, planes: int, stride: int, norm: str, downsample: nn.Module | None,
                 groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False):
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("ResNet-18/34 blocks support only groups=1 and width_per_group=64 "
                             f"(got groups={groups}, width_per_group={width_per_group}); use depth >= 50 for ResNeXt.")
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x, self.fold_norms)
        out = conv_norm(self.conv1, self.bn1, x, self.fold_norms, relu=True)
        return conv_norm(self.conv2, self.bn2, out, self.fold_norms, relu=True, residual=identity)


class Bottleneck(nn.Module):
    expansion = 4
    fold_norms = True   # see conv_norm; ResNet(fold_norms=False) turns it off for exact reference numerics

    def __init__(self, in_channels: int, planes: int, stride: int, norm: str, downsample: nn.Module | None,
                 groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        # MSRA's original ResNet (and so Detectron2's model zoo) strides in the first 1x1
        # convolution; torchvision ("ResNet v1.5") strides in the 3x3 one.
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride_1x1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride_3x3, padding=1, groups=groups, bias=False)
        self.bn2 = make_norm(norm, width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = make_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x, self.fold_norms)
        out = conv_norm(self.conv1, self.bn1, x, self.fold_norms, relu=True)
        out = conv_norm(self.conv2, self.bn2, out, self.fold_norms, relu=True)
        return conv_norm(self.conv3, self.bn3, out, self.fold_norms, relu=True, residual=identity)


def blocks_for(depth: int | None, blocks_per_stage: Sequence[int] | None) -> tuple[int, ...]:
    if blocks_per_stage is not None:
        blocks = tuple(int(b) for b in blocks_per_stage)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"backbone.blocks_per_stage must list 4 positive ints (res2..res5), got {list(blocks_per_stage)}.")
        return blocks
    if depth not in BLOCKS_PER_DEPTH:
        raise ValueError(f"backbone.depth={depth} is not a standard ResNet depth "
                         f"({', '.join(map(str, BLOCKS_PER_DEPTH))}); set backbone.blocks_per_stage instead.")
    return BLOCKS_PER_DEPTH[depth]


class ResNet(nn.Module):
    """A ResNet/ResNeXt body. `forward` returns an OrderedDict {stage name: feature} for
    `out_features`; stages after the last requested one are not built at all (so they hold
    no unused parameters)."""

    fold_norms = True

    def __init__(
        self,
        depth: int | None = 50,
        blocks_per_stage: Sequence[int] | None = None,
        groups: int = 1,
        width_per_group: int = 64,
        norm: str = "bn",
        freeze_at: int = 0,
        out_features: Sequence[str] = STAGE_NAMES,
        stride_in_1x1: bool = False,
        bottleneck: bool | None = None,
        base_channels: int = 64,
        fold_norms: bool = True,
    ):
        super().__init__()
        blocks = blocks_for(depth, blocks_per_stage)
        if bottleneck is None:
            # With a custom blocks_per_stage, depth still picks the block type (< 50: basic).
            bottleneck = (depth or 50) >= 50
        block = Bottleneck if bottleneck else BasicBlock
        unknown = [name for name in out_features if name not in STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(f"backbone.out_features={list(out_features)}: each entry must be one of {', '.join(STAGE_NAMES)}.")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"backbone.freeze_at={freeze_at} must be in 0..5 (0: nothing, 1: stem, k: stem + res2..res{{k}}).")
        self.out_features = [name for name in STAGE_NAMES if name in out_features]
        self.norm = norm
        self.freeze_at = freeze_at
        self.block_expansion = block.expansion

        if base_channels < 8 or base_channels % 8:
            raise ValueError(f"backbone.base_channels={base_channels} must be a positive multiple of 8 (64 is the standard ResNet).")
        # base_channels < 64 gives a narrow ResNet for CPU recipes; 64 matches torchvision.
        self.conv1 = nn.Conv2d(3, base_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        num_stages = STAGE_NAMES.index(self.out_features[-1]) + 1
        self.out_channels: dict[str, int] = {}
        self.strides = {name: STAGE_STRIDES[name] for name in self.out_features}
        in_channels = base_channels
        for index in range(num_stages):
            planes = base_channels * 2**index
            stride = 1 if index == 0 else 2
            stage, in_channels = self._make_stage(block, in_channels, planes, blocks[index], stride, norm,
                                                  groups, width_per_group, stride_in_1x1)
            self.add_module(f"layer{index + 1}", stage)
            self.out_channels[STAGE_NAMES[index]] = in_channels
        self.out_channels = {name: c for name, c in self.out_channels.items() if name in self.out_features}
        self.final_channels = in_channels
        self._init_weights()
        self.set_norm_folding(fold_norms)

    def set_norm_folding(self, enabled: bool) -> None:
        """Fold frozen norms into the convolutions (faster; equal up to float rounding) or run
        them as separate layers (bit-for-bit torchvision's order of operations)."""
        for module in self.modules():
            if hasattr(module, "fold_norms"):
                module.fold_norms = bool(enabled)
        self._freeze()

    @staticmethod
    def _make_stage(block, in_channels, planes, num_blocks, stride, norm, groups, width_per_group, stride_in_1x1):
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                make_norm(norm, out_channels),
            )
        layers = [block(in_channels, planes, stride, norm, downsample, groups, width_per_group, stride_in_1x1)]
        for _ in range(1, num_blocks):
            layers.append(block(out_channels, planes, 1, norm, None, groups, width_per_group, stride_in_1x1))
        return nn.Sequential(*layers), out_channels

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first freeze_at-1 stages (Detectron2's FREEZE_AT semantics)."""
        if self.freeze_at == 0:
            return []
        modules: list[nn.Module] = [self.conv1, self.bn1]
        for index in range(1, self.freeze_at):
            stage = getattr(self, f"layer{index}", None)
            if stage is not None:
                modules.append(stage)
        return modules

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        # Frozen stages must not update BatchNorm running statistics either.
        for module in self.frozen_modules():
            for sub in module.modules():
                if is_batch_norm(sub):
                    sub.eval()
        return self

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(conv_norm(self.conv1, self.bn1, x, self.fold_norms, relu=True))

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.stem(x)
        outputs: OrderedDict[str, torch.Tensor] = OrderedDict()
        for index, name in enumerate(STAGE_NAMES):
            stage = getattr(self, f"layer{index + 1}", None)
            if stage is None:
                break
            x = stage(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs

    def built_stage_prefixes(self) -> set[str]:
        return {f"layer{i + 1}." for i in range(4) if hasattr(self, f"layer{i + 1}")}
