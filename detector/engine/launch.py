"""Device choice, process-group set-up and DDP wrapping for a training run."""
from __future__ import annotations

import logging

import torch
from torch import nn

from detector.utils.distributed import get_world_size


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """train.device: auto (CUDA when available), cpu, or cuda (an error without a GPU)."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device={requested!r} is not supported; use auto, cpu or cuda.")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto.")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def wrap_for_training(
    model: nn.Module,
    device: torch.device,
    sync_bn: bool = False,
    find_unused_parameters: bool = False,
    logger: logging.Logger | None = None,
) -> nn.Module:
    """Move the model to `device`; under several processes, wrap it in DDP.

    With sync_bn, BatchNorm layers become SyncBatchNorm (statistics over the whole
    batch across GPUs). PyTorch implements SyncBatchNorm on CUDA only, so on the CPU the
    layers stay per-process BatchNorm, with a warning.
    """
    logger = logger or logging.getLogger("detector")
    model = model.to(device)
    if get_world_size() == 1:
        return model
    if sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.warning("backbone.norm=sync_bn: SyncBatchNorm needs CUDA; on the CPU each process keeps its own BatchNorm statistics.")
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )
