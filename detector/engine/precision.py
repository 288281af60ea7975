"""Mixed-precision settings from train.amp and the device."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from detector.utils.hardware import cpu_has_native_bf16


@dataclass(frozen=True)
class Precision:
    """`dtype` is the autocast dtype (None: full fp32); `use_scaler` for fp16 on CUDA."""

    device_type: str
    dtype: torch.dtype | None
    use_scaler: bool

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def make_scaler(self) -> "torch.amp.GradScaler | None":
        return torch.amp.GradScaler("cuda") if self.use_scaler else None


def resolve_precision(amp: str, device: torch.device, logger=None) -> Precision:
    """none -> fp32; bf16 -> bf16 autocast (CUDA or CPU); fp16 -> fp16 autocast + GradScaler (CUDA only).

    bf16 on a CPU without native bfloat16 falls back to fp32 (logged): there it is the slower
    choice by far, and the CPU recipes (schedule=shapes, bccd) ask for bf16 for speed only."""
    if amp in ("none", None, False):
        return Precision(device.type, None, False)
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("train.amp=bf16: this GPU does not support bfloat16; use train.amp=fp16.")
        if device.type == "cpu" and not cpu_has_native_bf16():
            if logger is not None:
                logger.warning("train.amp=bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), where bf16 "
                               "is several times slower than fp32; running in fp32 instead.")
            return Precision(device.type, None, False)
        return Precision(device.type, torch.bfloat16, False)
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("train.amp=fp16 needs a CUDA device; on the CPU use train.amp=bf16 or none.")
        return Precision(device.type, torch.float16, True)
    raise ValueError(f"train.amp={amp!r} is not supported; use none, bf16 or fp16.")
