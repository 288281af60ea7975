"""Inference latency at batch 1: torchvision against this project, same weights and images."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from detector.benchmarking.detections import agreement
from detector.benchmarking.timing import interleaved_times, ratio, summarize


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def predictor(model: nn.Module, images: list[torch.Tensor], dtype: torch.dtype | None,
              device: torch.device) -> Callable[[int], list[dict]]:
    """Runs the model on images[i % len(images)] (batch 1) under inference_mode."""
    def run(index: int) -> list[dict]:
        with torch.inference_mode(), autocast_for(device, dtype):
            return model([images[index % len(images)]])
    return run


def compare_inference(variants: dict[str, tuple[nn.Module, torch.dtype | None]], images: list[torch.Tensor],
                      device: torch.device, repeats: int, warmup: int, reference: str | None = "torchvision",
                      compared: tuple = ("ours_exact", "ours_fp32")) -> dict:
    """Median latency of each variant; ratios to `reference`; how the fp32 detections agree."""
    runs = {name: predictor(model, images, dtype, device) for name, (model, dtype) in variants.items()}
    times = interleaved_times(runs, repeats, warmup, device)
    report: dict = {"images": [list(im.shape[-2:]) for im in images],
                    "latency": {name: summarize(values) for name, values in times.items()}}
    if reference in times:
        report["ratio_to_" + reference] = {name: ratio(values, times[reference]) for name, values in times.items()
                                           if name != reference}
        for name in compared:
            if name in runs:
                report["agreement_" + name] = [agreement(runs[reference](i)[0], runs[name](i)[0])
                                               for i in range(len(images))]
    return report


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of one call (convolutions and matrix products; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops())
