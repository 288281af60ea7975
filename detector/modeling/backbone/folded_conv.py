"""A convolution followed by a fixed per-channel affine map, run as one convolution.

y = conv(x, weight * scale) + shift equals norm(conv(x)) for a frozen norm up to float
rounding, and skips the norm's passes over the activations. Under autograd the folded
weights must not be kept for the backward pass (a copy of every convolution's weights,
more than the norm's activations it saves at small batches): the backward refolds them
from the parameter instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class _FoldedConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, scale, shift, stride, padding, dilation, groups):
        dtype = _compute_dtype(x)
        folded = (weight * scale.view(-1, 1, 1, 1)).to(dtype)
        x_cast = x.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            y = F.conv2d(x_cast, folded, shift.to(dtype), stride, padding, dilation, groups)
        # The input as the convolution saw it (autocast's own conv keeps the same copy),
        # and the parameter itself rather than the folded weights.
        ctx.save_for_backward(x_cast, weight, scale)
        ctx.conv_args = (list(stride), list(padding), list(dilation), groups)
        ctx.input_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x_cast, weight, scale = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        need_x, need_weight, need_scale, need_shift = ctx.needs_input_grad[:4]
        folded = (weight * scale.view(-1, 1, 1, 1)).to(x_cast.dtype)
        grad_x = grad_folded = grad_scale = grad_shift = None
        if need_x or need_weight or need_scale:
            grad_x, grad_folded, _ = torch.ops.aten.convolution_backward(
                grad_y.to(x_cast.dtype), x_cast, folded, None, stride, padding, dilation, False, [0, 0], groups,
                [need_x, need_weight or need_scale, False])
        if grad_x is not None:
            grad_x = grad_x.to(ctx.input_dtype)
        grad_weight = None
        if grad_folded is not None:
            grad_folded = grad_folded.to(weight.dtype)
            if need_weight:
                grad_weight = grad_folded * scale.view(-1, 1, 1, 1)
            if need_scale:
                grad_scale = (grad_folded * weight).sum(dim=(1, 2, 3))
        if need_shift:
            grad_shift = grad_y.sum(dim=(0, 2, 3)).to(scale.dtype)
        return grad_x, grad_weight, grad_scale, grad_shift, None, None, None, None


def folded_conv(x: torch.Tensor, conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """conv(x) * scale + shift per output channel, as a single convolution."""
    if conv.bias is not None:
        shift = conv.bias * scale + shift
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad
                                              or scale.requires_grad or shift.requires_grad)
    if needs_grad:
        return _FoldedConvFunction.apply(x, conv.weight, scale, shift, conv.stride, conv.padding, conv.dilation,
                                         conv.groups)
    weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
    return F.conv2d(x, weight, shift.to(weight.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)
