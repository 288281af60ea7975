"""Where training progress goes: the console/log.txt line and TensorBoard."""
from __future__ import annotations

import datetime
import logging
import sys
from pathlib import Path

import torch

try:
    import resource
except ImportError:  # Windows has no resource module; peak memory is then not measured
    resource = None

# Scalars that describe the run rather than the losses; printed in fixed places.
_TIMING = ("time", "data_time", "lr", "grad_norm")


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated by tensors; CPU: peak resident set size of this process (0 where
    the platform cannot tell: Windows)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if resource is None:
        return 0.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class ConsoleWriter:
    """One line per write: iteration, each loss, lr, time/iter, data time, ETA, peak memory."""

    def __init__(self, max_iter: int, logger: logging.Logger):
        self.max_iter = max_iter
        self.logger = logger
        self.last_iter = -1

    def write(self, trainer) -> None:
        storage = trainer.storage
        latest = storage.latest()
        if "total_loss" not in latest or latest["total_loss"][1] <= self.last_iter:
            return
        iteration = latest["total_loss"][1]
        self.last_iter = iteration
        losses = "  ".join(
            f"{name}: {storage.value(name):.4f}"
            for name in sorted(latest)
            if name.startswith("loss") or name == "total_loss"
        )
        time_per_iter = storage.median("time")
        eta = datetime.timedelta(seconds=int(time_per_iter * (self.max_iter - iteration)))
        lr = latest.get("lr", (float("nan"), 0))[0]
        extra = f"  grad_norm: {storage.value('grad_norm'):.3f}" if "grad_norm" in latest else ""
        self.logger.info(
            f"iter: {iteration}/{self.max_iter}  {losses}  lr: {lr:.6g}{extra}  "
            f"time: {time_per_iter:.3f}s/it  data_time: {storage.median('data_time'):.3f}s  "
            f"eta: {eta}  max_mem: {peak_memory_mb(trainer.device):.0f}M"
        )

    def close(self) -> None:
        pass


class TensorboardWriter:
    """Every scalar (losses smoothed over the logging window, lr, metrics) and picture."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.written: dict[str, int] = {}

    def write(self, trainer) -> None:
        storage = trainer.storage
        for name, (_, iteration) in storage.latest().items():
            if self.written.get(name, -1) >= iteration:
                continue
            tag = name if "/" in name else f"train/{name}"
            self.writer.add_scalar(tag, storage.value(name), iteration)
            self.written[name] = iteration
        for tag, picture, iteration in storage.pop_images():
            self.writer.add_image(tag, picture, iteration, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
