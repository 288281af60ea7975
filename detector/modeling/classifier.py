"""A ResNet image classifier: the detector's ResNet body, global average pooling, one fc layer.

Parameter names are torchvision's (conv1, bn1, layer1..layer4, fc), so a torchvision
ImageNet ResNet/ResNeXt state dict loads with strict key checks, and the body of a trained
classifier loads into the detector's backbone (`backbone.weights=CKPT`) unchanged.
The model takes normalised images [B, 3, H, W] and returns logits [B, num_classes], as
torchvision's classification models do; normalisation belongs to the data transform.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import torch
from torch import nn

from detector.modeling.backbone.resnet import ResNet
from detector.weights.state_dicts import load_state_dict_strict, read_state_dict, strip_prefix

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


def classifier_state_from_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A classifier state dict from a checkpoint of this project ({"model": ...}), a
    .safetensors file or a bare torchvision state dict; DDP's "module." prefix removed.
    A published name (e.g. torchvision://resnet50) reads its cached conversion."""
    from detector.weights.zoo import resolve_weights

    state, _ = read_state_dict(resolve_weights(path))
    return strip_prefix(state, "module.")


def load_classifier_weights(model: ResNetClassifier, state: Mapping[str, torch.Tensor], source: str,
                            logger: logging.Logger | None = None) -> list[str]:
    """Load `state` into `model` with strict key checks, except that an fc head of another
    shape (a different number of classes, e.g. ImageNet's 1000) is left freshly initialised.

    Returns the keys that were re-initialised (and logs them); every other missing,
    unexpected or mis-shaped key raises WeightsMismatchError naming it.
    """
    logger = logger or logging.getLogger("detector")
    state = dict(state)
    expected = model.state_dict()
    reinitialised = [k for k in HEAD_KEYS if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if reinitialised:
        old = int(state["fc.weight"].shape[0]) if "fc.weight" in state else "?"
        model.reset_head()
        fresh = model.state_dict()
        for key in HEAD_KEYS:
            state[key] = fresh[key]  # the model's own new head, so the strict load keeps it
        reinitialised = list(HEAD_KEYS)
        logger.info("Weights from %s have an fc head for %s classes, this model has %d: re-initialised %s; "
                    "every other key was loaded.", source, old, model.num_classes, ", ".join(reinitialised))
    load_state_dict_strict(model, state, source=source)
    logger.info("Loaded classifier weights from %s.", source)
    return reinitialised


def build_classifier(cfg, num_classes: int | None = None, logger: logging.Logger | None = None) -> ResNetClassifier:
    """The classifier described by `cfg.backbone` and `cfg.model` (conf/cls.yaml).

    Starting weights, both optional: `model.weights` (a classifier checkpoint of this project
    or a torchvision ImageNet file; the fc head is re-initialised when its class count
    differs) or `backbone.weights` (the body only; the fc head stays new).
    """
    b = cfg.backbone
    num_classes = int(num_classes if num_classes is not None else cfg.model.num_classes)
    model = ResNetClassifier(
        num_classes=num_classes,
        depth=b.depth,
        blocks_per_stage=b.blocks_per_stage,
        groups=b.groups,
        width_per_group=b.width_per_group,
        norm=b.norm,
        freeze_at=b.freeze_at,
        stride_in_1x1=b.stride_in_1x1,
        dropout=float(cfg.model.get("dropout", 0.0)),
    )
    if cfg.model.get("weights") and b.get("weights"):
        raise ValueError(f"Both model.weights={cfg.model.weights} and backbone.weights={b.weights} are set; "
                         "pick one (model.weights loads the whole classifier, backbone.weights the body only).")
    if cfg.model.get("weights"):
        path = str(cfg.model.weights)
        load_classifier_weights(model, classifier_state_from_file(path), path, logger)
    elif b.get("weights"):
        load_body_weights(model, str(b.weights), logger)
    return model


def load_body_weights(model: ResNetClassifier, path: str, logger: logging.Logger | None = None) -> None:
    """The ResNet body from `path` (a torchvision file, a classifier checkpoint, or a backbone
    written with a "backbone.body." prefix), strictly; the fc head stays new."""
    logger = logger or logging.getLogger("detector")
    state = classifier_state_from_file(path)
    for prefix in ("backbone.body.", "body.", "backbone."):
        state = strip_prefix(state, prefix)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state.update({k: v for k, v in model.state_dict().items() if k in HEAD_KEYS})
    load_state_dict_strict(model, state, source=path)
    logger.info("Loaded backbone weights from %s; the fc head (%d classes) is new.", path, model.num_classes)
