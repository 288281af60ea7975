"""The weights a CPU inference convolution runs with, prepared once instead of at every call.

An eval-mode convolution on the CPU runs with weights derived from its parameters: a frozen
norm folded in (weight * scale, see folded_conv) and, for oneDNN's NHWC kernels, the weight in
channels-last layout (the fused kernel copies an NCHW 3x3 weight into NHWC at every call).
On R50-FPN at 800 px that per-call work was about 7 % of an inference's operator time
(docs/speed.md, the profile section): a pass over every convolution weight, per image.

The prepared tensor is kept on the convolution module (a plain attribute: not in the state
dict, not a parameter) with the key it was made from: the parameter's storage and version
counter (bumped by every in-place change: an optimizer step, load_state_dict, copy_), the
dtype and layout, and the fold's per-channel scale and shift by value. Any change makes a new
one, so the numbers are those of the per-call computation, bit for bit. Only in eval mode and
without autograd; a module back in training mode drops its copy (no stale weights held while
training). Not inside torch.compile, whose graph computes (and may constant-fold) the weights
itself.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ATTRIBUTE = "_inference_weights"
# False: prepare at every call, as before (the benchmark's profile section times both ways).
ENABLED = True


class ParameterKey:
    """What identifies a parameter's current values without reading them: its storage address,
    version counter, dtype and device. It holds the tensor itself, so that while a prepared copy
    is kept for it, its memory cannot be freed and reused by a parameter put in its place (a new
    tensor at the same address with the same version would otherwise look unchanged)."""

    __slots__ = ("tensor", "identity")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self.identity = (tensor.data_ptr(), tensor._version, tensor.dtype, tensor.device)

    def __eq__(self, other) -> bool:
        return isinstance(other, ParameterKey) and self.identity == other.identity

    def __hash__(self) -> int:
        return hash(self.identity)


def parameter_key(tensor: torch.Tensor | None) -> ParameterKey | None:
    return None if tensor is None else ParameterKey(tensor)


def prepared(conv: nn.Module, key: tuple, same_inputs: Callable[[tuple], bool],
             make: Callable[[], tuple]) -> tuple:
    """`make()`'s tensors for `conv`, reused while `key` is unchanged and same_inputs(the stored
    inputs) holds; made again (and stored) otherwise."""
    stored = conv.__dict__.get(ATTRIBUTE)
    if stored is not None and stored[0] == key and same_inputs(stored[1]):
        return stored[2]
    inputs, tensors = make()
    conv.__dict__[ATTRIBUTE] = (key, inputs, tensors)
    return tensors


def drop(conv: nn.Module) -> None:
    """Forget `conv`'s prepared weights (a module back in training)."""
    if not torch.compiler.is_compiling():   # a compiled graph holds no prepared copy, and a dict edit breaks it
        conv.__dict__.pop(ATTRIBUTE, None)


def cacheable(conv: nn.Module, x: torch.Tensor) -> bool:
    """Eval mode, no autograd, on the CPU (CUDA keeps the per-call path: its refold is a few
    kernel launches, and comparing the fold's values would synchronise the device)."""
    if torch.compiler.is_compiling():   # torch.compile captures the per-call computation (and may fold it)
        return False
    if conv.training:
        drop(conv)
        return False
    return ENABLED and x.device.type == "cpu" and not torch.jit.is_tracing() and not torch.jit.is_scripting()
