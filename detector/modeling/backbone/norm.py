"""The normalization layers a backbone can use, chosen by name from the config."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detector.modeling.backbone import inference_weights
from detector.modeling.backbone.folded_conv import folded_conv

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


def fixed_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) per channel when `norm` is, right now, a fixed affine map y = x * scale + shift:
    FrozenBatchNorm always, BatchNorm in eval mode. None otherwise (training BatchNorm, GroupNorm)."""
    if isinstance(norm, FrozenBatchNorm2d):
        weight, bias, eps = norm.weight, norm.bias, norm.eps
    elif is_batch_norm(norm) and not norm.training and norm.running_var is not None:
        weight, bias, eps = norm.weight, norm.bias, norm.eps
    else:
        return None
    scale = (norm.running_var + eps).rsqrt()
    if weight is not None:
        scale = weight * scale
    shift = -norm.running_mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor, fold: bool = True, relu: bool = False,
              residual: torch.Tensor | None = None) -> torch.Tensor:
    """relu?(norm(conv(x)) (+ residual)), computed as one convolution when the norm is a fixed
    affine map.

    Folding the norm into the convolution's weights saves a full pass over the activations
    (two, with the backward of a frozen norm); the weights are refolded on every call, a
    cost proportional to the parameters rather than the pixels, so the state dict, the
    checkpoints and training are unchanged. The result differs from the unfolded one by
    float rounding only. See folded_conv for the backward pass and the fused CPU kernels.
    """
    affine = fixed_affine(norm) if fold else None
    if affine is not None:
        return folded_conv(x, conv, *affine, relu=relu, residual=residual)
    inference_weights.drop(conv)   # a norm in training: no prepared eval weights kept meanwhile
    y = norm(conv(x))
    if residual is not None:
        y += residual   # in place: one less activation-sized tensor
    return F.relu(y, inplace=True) if relu else y
