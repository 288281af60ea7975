"""Which device a run uses, and its model moved there and wrapped in DDP under several processes."""
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
    static_graph: bool = False,
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
            model = revert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    # gradient_as_bucket_view: gradients live in the all-reduce buckets (no copy, less memory).
    # static_graph: the same parameters take part in every step, so DDP can fix the bucket
    # order after the first iteration and skip its per-step bookkeeping.
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters,
        gradient_as_bucket_view=True, static_graph=static_graph,
    )


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm layers replaced by BatchNorm2d with the same state (PyTorch refuses
    SyncBatchNorm on CPU tensors under a process group)."""
    if isinstance(module, nn.SyncBatchNorm):
        plain = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        plain.load_state_dict(module.state_dict())
        plain.train(module.training)
        return plain.to(next(module.buffers(), torch.empty(0)).device)
    for name, child in module.named_children():
        replaced = revert_sync_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
