"""Frozen norms folded into convolutions: same values and gradients as conv then norm,
without keeping a folded copy of the weights for the backward pass."""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detector.modeling.backbone.norm import conv_norm


def frozen_norm(channels: int, seed: int, dtype=torch.float64) -> FrozenBatchNorm2d:
    generator = torch.Generator().manual_seed(seed)
    norm = FrozenBatchNorm2d(channels)
    norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
    norm.bias.copy_(torch.randn(channels, generator=generator))
    norm.running_mean.copy_(torch.randn(channels, generator=generator))
    norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return norm.to(dtype)


@pytest.mark.parametrize("stride, groups, channels_last", [(1, 1, False), (2, 1, True), (1, 4, False)])
def test_values_and_gradients_match_unfolded(stride, groups, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, stride=stride, padding=1, groups=groups, bias=False).double()
    norm = frozen_norm(12, seed=1)
    x = torch.randn(2, 8, 11, 13, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref, x_fold = x.clone().requires_grad_(), x.clone().requires_grad_()

    reference = norm(conv(x_ref))
    upstream = torch.randn_like(reference)
    (reference * upstream).sum().backward()
    grad_weight_ref, conv.weight.grad = conv.weight.grad.clone(), None

    folded = conv_norm(conv, norm, x_fold)
    (folded * upstream).sum().backward()
    torch.testing.assert_close(folded, reference, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_fold.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(conv.weight.grad, grad_weight_ref, rtol=1e-10, atol=1e-10)


def test_backward_keeps_no_folded_weight_copy():
    conv = nn.Conv2d(16, 32, 3, padding=1, bias=False)
    norm = frozen_norm(32, seed=2, dtype=torch.float32)
    x = torch.randn(1, 16, 20, 20)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        conv_norm(conv, norm, x).sum()
    weight_shaped = [t for t in saved if t.shape == conv.weight.shape]
    assert weight_shaped and all(t.data_ptr() == conv.weight.data_ptr() for t in weight_shaped)


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    norm = frozen_norm(8, seed=3, dtype=torch.float32)
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    reference = norm(conv(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        folded = conv_norm(conv, norm, x)
    assert folded.dtype == torch.bfloat16
    folded.float().sum().backward()
    assert x.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    scale = reference.abs().max()
    assert (folded.float() - reference).abs().max() <= 0.02 * scale


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("with_residual", [True, False])
def test_inference_fused_relu_and_residual_match_separate_ops(channels_last, with_residual):
    """Inference on the CPU takes oneDNN's fused conv + add + ReLU; same values as the ops one by one."""
    torch.manual_seed(4)
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    norm = frozen_norm(16, seed=4, dtype=torch.float32)
    x = torch.randn(1, 16, 24, 20)
    residual = torch.randn(1, 16, 24, 20) if with_residual else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        residual = None if residual is None else residual.contiguous(memory_format=torch.channels_last)
    reference = norm(conv(x))
    if residual is not None:
        reference = reference + residual
    reference = torch.relu(reference)
    with torch.inference_mode():
        fused = conv_norm(conv, norm, x, relu=True, residual=residual)
        unfolded = conv_norm(conv, norm, x, fold=False, relu=True, residual=None if residual is None else residual.clone())
    torch.testing.assert_close(unfolded, reference, rtol=0, atol=0)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = conv_norm(conv, norm, x, relu=True, residual=residual)
    assert low.dtype == torch.bfloat16
    assert (low.float() - reference).abs().max() <= 0.02 * reference.abs().max()
