"""A ResNet image classifier: the detector's ResNet body, global average pooling, one fc layer.

Parameter names are torchvision's (conv1, bn1, layer1..layer4, fc), so a torchvision
ImageNet ResNet/ResNeXt state dict loads with strict key checks, and the body of a trained
classifier loads into the detector's backbone (`backbone.weights=CKPT`) unchanged.
The model takes normalised images [B, 3, H, W] and returns logits [B, num_classes], as
torchvision's classification models do; normalisation belongs to the data transform.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from detector.modeling.backbone.resnet import ResNet

HEAD_KEYS = ("fc.weight", "fc.bias")


class ResNetClassifier(ResNet):
    """ResNet/ResNeXt with all four stages, then pooling and `fc`.

    Subclassing the detector's ResNet (rather than wrapping it) keeps the state dict flat,
    exactly torchvision's layout. `freeze_at` works as in the detector: the stem and the
    first freeze_at-1 stages stay fixed, which sets how deep fine-tuning goes.
    """

    def __init__(
        self,
        num_classes: int,
        depth: int | None = 50,
        blocks_per_stage: Sequence[int] | None = None,
        groups: int = 1,
        width_per_group: int = 64,
        norm: str = "bn",
        freeze_at: int = 0,
        stride_in_1x1: bool = False,
        dropout: float = 0.0,
        base_channels: int = 64,
    ):
        if num_classes < 1:
            raise ValueError(f"model.num_classes={num_classes} must be >= 1.")
        # out_features=res5 builds every stage; the classifier reads only the last one.
        super().__init__(depth=depth, blocks_per_stage=blocks_per_stage, groups=groups,
                         width_per_group=width_per_group, norm=norm, freeze_at=freeze_at,
                         out_features=("res5",), stride_in_1x1=stride_in_1x1, base_channels=base_channels)
        self.num_classes = int(num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # Dropout has no parameters, so it leaves the state dict torchvision-compatible.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.final_channels, self.num_classes)

    def reset_head(self) -> None:
        """A fresh fc layer (PyTorch's default Linear initialisation, as torchvision's)."""
        self.fc.reset_parameters()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled res5 features [B, C] (what the fc layer sees)."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.fc(self.dropout(self.features(x)))


def build_resnet_classifier(backbone: Mapping, num_classes: int, dropout: float, fold_norms: bool) -> ResNetClassifier:
    """cls.yaml's model: a classifier on the ResNet that `backbone` (a conf/backbone node)
    describes; its stage selection (out_features) does not apply, every stage is built."""
    resnet_keys = ("depth", "blocks_per_stage", "groups", "width_per_group", "norm", "freeze_at", "stride_in_1x1",
                   "base_channels")
    model = ResNetClassifier(num_classes=num_classes, dropout=dropout, **{key: backbone[key] for key in resnet_keys})
    model.set_norm_folding(fold_norms)
    return model
