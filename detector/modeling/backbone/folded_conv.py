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

from detector.modeling.backbone import inference_weights
from detector.utils.hardware import cpu_has_native_bf16


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    # meta tensors (shape checks) have no autocast state to ask about: asking raises
    if device_type != "meta" and torch.is_autocast_enabled(device_type):
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


def _fused_cpu_conv_available(x: torch.Tensor) -> bool:
    # Not while exporting: ONNX and TorchScript files must hold standard operators.
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return False
    return (x.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def _register_fused_conv_flops() -> None:
    """FlopCounterMode (model summaries, the benchmark) counts aten convolutions only; teach it
    oneDNN's fused ones, or a CPU inference would seem to skip most of the backbone."""
    from torch.utils.flop_counter import conv_flop_count, flop_registry, register_flop_formula

    packet = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if packet is None or packet in flop_registry:
        return

    @register_flop_formula(packet, get_raw=True)
    def fused_conv_flops(x, *args, out_val=None, **kwargs):
        # default overload: (X, W, B, padding, ...); binary: (X, other, W, B, padding, ...)
        binary = args[2] is None or isinstance(args[2], torch.Tensor)
        weight = args[1] if binary else args[0]
        return conv_flop_count(list(x.shape), list(weight.shape), list(out_val.shape), transposed=False)


def _fused_cpu_conv(x, weight, bias, conv: nn.Conv2d, relu: bool, residual: torch.Tensor | None) -> torch.Tensor:
    """oneDNN convolution with the residual add and the ReLU as post-ops (the kernels
    torch.compile emits for CPU): one pass over the output instead of three, and the same
    values, since the add and the ReLU round as they would separately."""
    args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    unary = "relu" if relu else "none"
    if residual is None:
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *args, unary, [], "")
    return torch.ops.mkldnn._convolution_pointwise.binary(x, residual.to(x.dtype), weight, bias, *args, "add", None,
                                                          unary if relu else None, [], "")


def folded_conv(x: torch.Tensor, conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor, relu: bool = False,
                residual: torch.Tensor | None = None) -> torch.Tensor:
    """relu?(conv(x) * scale + shift (+ residual)) per output channel, as a single convolution."""
    if conv.bias is not None:
        shift = conv.bias * scale + shift
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad
                                              or scale.requires_grad or shift.requires_grad
                                              or (residual is not None and residual.requires_grad))
    if needs_grad:
        inference_weights.drop(conv)
        y = _FoldedConvFunction.apply(x, conv.weight, scale, shift, conv.stride, conv.padding, conv.dilation,
                                      conv.groups)
    else:
        # oneDNN's fused kernels are used in the NHWC layout only (their NCHW fallback lacks bf16).
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and (
            residual is None or residual.is_contiguous(memory_format=torch.channels_last))
        dtype = _compute_dtype(x)
        fused = (channels_last and _fused_cpu_conv_available(x) and isinstance(conv.padding, tuple)
                 and (dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_has_native_bf16())))
        if inference_weights.cacheable(conv, x):
            weight, bias = _prepared_folded(conv, scale, shift, dtype if fused else None)
        else:
            weight, bias = _folded(conv, scale, shift, dtype if fused else None)
        if fused:
            return _fused_cpu_conv(x.to(dtype), weight, bias, conv, relu, residual)
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    # In place: the convolution's output is not needed by any backward pass.
    if residual is not None:
        y += residual
    return F.relu(y, inplace=True) if relu else y



def _folded(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor,
            fused_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight * scale, shift) as the convolution takes them: for oneDNN's fused NHWC kernel
    (fused_dtype given) in that dtype and in channels-last layout (the kernel would otherwise copy
    a 3x3 weight into it at every call; the values are the same), else in the weight's dtype."""
    weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
    if fused_dtype is None:
        return weight, shift.to(weight.dtype)
    return weight.to(fused_dtype).contiguous(memory_format=torch.channels_last), shift.to(fused_dtype)


def _prepared_folded(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor,
                     fused_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """_folded, made once per change of the weight or of the fold (inference_weights)."""
    key = ("folded", inference_weights.parameter_key(conv.weight), fused_dtype)
    return inference_weights.prepared(
        conv, key, lambda inputs: torch.equal(inputs[0], scale) and torch.equal(inputs[1], shift),
        lambda: ((scale.detach().clone(), shift.detach().clone()), _folded(conv, scale, shift, fused_dtype)))


def _unfolded(conv: nn.Conv2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    bias = None if conv.bias is None else conv.bias.to(dtype)
    return conv.weight.to(dtype).contiguous(memory_format=torch.channels_last), bias


def conv_with_post_ops(x: torch.Tensor, conv: nn.Conv2d, relu: bool = False,
                       residual: torch.Tensor | None = None) -> torch.Tensor:
    """relu?(conv(x) (+ residual)) for a convolution without a norm (FPN, RPN head): oneDNN's
    fused kernel for NHWC inference on the CPU, the separate operations otherwise."""
    fusable = (not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
               and x.is_contiguous(memory_format=torch.channels_last)
               and (residual is None or residual.is_contiguous(memory_format=torch.channels_last))
               and isinstance(conv.padding, tuple) and _fused_cpu_conv_available(x))
    if fusable:
        dtype = _compute_dtype(x)
        if dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_has_native_bf16()):
            if inference_weights.cacheable(conv, x):
                key = ("unfolded", inference_weights.parameter_key(conv.weight),
                       inference_weights.parameter_key(conv.bias), dtype)
                weight, bias = inference_weights.prepared(conv, key, lambda inputs: True,
                                                          lambda: ((), _unfolded(conv, dtype)))
            else:
                weight, bias = _unfolded(conv, dtype)
            return _fused_cpu_conv(x.to(dtype), weight, bias, conv, relu, residual)
    inference_weights.drop(conv)
    y = conv(x)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


_register_fused_conv_flops()
