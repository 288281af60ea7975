"""What this machine's CPU can do, for choices that depend on it (a leaf module: torch only)."""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX, as oneDNN needs).
    Without it (e.g. AVX2-only CPUs), bf16 convolutions are emulated at 5-50x fp32's time,
    and oneDNN's fused bf16 kernels refuse to run at all."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and probe is not None and probe())


def device_kind(requested: str) -> str:
    """train.device as the kind of device a run uses: "cuda" for cuda, and for auto when a GPU is
    visible; else "cpu" (engine/devices.select_device picks the device itself)."""
    return "cuda" if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()) else "cpu"
