"""Memory over many training iterations: a leak shows as steady growth after warm-up."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from detector.benchmarking.memory import resident_bytes
from detector.benchmarking.training import optimisation_step
from detector.utils.progress import track


def memory_over_iterations(cfg, device: torch.device, iterations: int) -> dict:
    """Train `cfg`'s model on its own data for `iterations` steps, reading after each step the
    process's resident memory (CPU) or the CUDA allocator's live bytes. Reports the readings
    at a few points and the least-squares slope over the second half, in MB per 100 iterations."""
    from detector.data import build_train_loader
    from detector.engine.precision import resolve_precision
    from detector.modeling.build import build_model

    model = build_model(cfg).to(device)
    step = optimisation_step(model, device, resolve_precision(cfg.train.amp, device).dtype, lr=1e-3)
    readings = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        iterator = iter(build_train_loader(cfg))
        for _ in track(range(iterations), desc="memory growth", unit="it", leave=False):
            batch = next(iterator)
            images = [im.to(device, non_blocking=True) for im in batch["images"]]
            targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in batch["targets"]]
            step(images, targets)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                readings.append(torch.cuda.memory_allocated(device))
            else:
                readings.append(resident_bytes())
    mb = np.asarray(readings, dtype=np.float64) / 2**20
    half = len(mb) // 2
    slope = float(np.polyfit(np.arange(half, len(mb)), mb[half:], 1)[0] * 100) if len(mb) - half >= 2 else 0.0
    marks = sorted({0, 9, half, len(mb) - 1} & set(range(len(mb))))
    return {"iterations": iterations, "measure": "cuda_allocated" if device.type == "cuda" else "process_rss",
            "mb_at": {str(i + 1): round(float(mb[i]), 1) for i in marks},
            "slope_mb_per_100_iters_second_half": round(slope, 2), "max_mb": round(float(mb.max()), 1)}
