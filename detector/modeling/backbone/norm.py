"""The normalization layers a backbone can use, chosen by name from the config."""
from __future__ import annotations

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

NORM_CHOICES = ("frozen_bn", "bn", "sync_bn", "gn")

# Detectron2 and the GN paper use 32 groups; every ResNet/FPN width is a multiple of 32.
GROUP_NORM_GROUPS = 32


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalization layer over `channels`. Parameter names are those of BatchNorm2d
    (weight, bias, running_mean, running_var), so BatchNorm checkpoints load into all of them
    except GroupNorm, which has no running statistics."""
    if kind == "frozen_bn":
        # Statistics and affine parameters fixed: the usual choice for detection fine-tuning
        # with small per-GPU batches.
        return FrozenBatchNorm2d(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "sync_bn":
        return nn.SyncBatchNorm(channels)
    if kind == "gn":
        return nn.GroupNorm(GROUP_NORM_GROUPS, channels)
    raise ValueError(f"Unknown norm '{kind}'. Valid choices: {', '.join(NORM_CHOICES)}.")


def is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)
