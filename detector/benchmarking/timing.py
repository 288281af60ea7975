"""Interleaved timing: medians over repeats, every candidate run once per repeat."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import torch

from detector.utils.progress import Progress


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(candidates: Mapping[str, Callable[[int], object]], repeats: int, warmup: int,
                      device: torch.device, desc: str | None = None) -> dict[str, list[float]]:
    """Seconds per call of each candidate. Candidates take the repeat index (to cycle inputs)
    and run in turn within each repeat -- A B C, A B C, ... -- so drifts in machine load
    hit all of them alike. The first `warmup` rounds (allocator, oneDNN/cuDNN plans) are
    not timed. Shows progress in runs (rounds x candidates)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    desc = desc or "timing " + ", ".join(candidates)
    with Progress(total=(warmup + repeats) * len(candidates), desc=desc, unit="runs", leave=False) as progress:
        for round_index in range(warmup + repeats):
            for name, run in candidates.items():
                synchronize(device)
                start = time.perf_counter()
                run(round_index)
                synchronize(device)
                if round_index >= warmup:
                    times[name].append(time.perf_counter() - start)
                progress.update(1)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def ratio(ours: list[float], theirs: list[float]) -> float:
    """Median of the per-repeat ratios: each pair ran back to back, so this is robust to load drifts."""
    return statistics.median(a / b for a, b in zip(ours, theirs))
