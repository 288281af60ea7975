"""The profile section (tools/benchmark.py --sections profile): where the PyTorch CPU path spends
its time, by operator, on R50-FPN at 800 px (random weights, a coco128 photo).

torch.profiler records every aten operator of a few runs after a warm-up; each operator's
self time (its own, without the operators it calls) summed over the runs, divided by the runs,
and its share of all self time, give a ranking whose shares add up to 100 %. Three parts:
fp32 inference (and bf16 under autocast where the CPU runs bf16 natively), torchvision's fp32
inference holding the same weights (the reference the speed goal is a ratio to), and one
training step (forward, backward, SGD step; batch 1, the photo resized to 800 x 800).

Then the change the profile led to, before and after in one run: this project's fp32 inference
with its convolution weights prepared at every call (before) and kept prepared
(detector/modeling/backbone/inference_weights.py, after), with torchvision fp32, timed in
interleaved rounds on three coco128 photos, each as a ratio to torchvision's time.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from detector.benchmarking.deploy import cpu_bf16, pytorch_runner

TOP = 12


def operator_shares(run: Callable[[], object], runs: int, warmup: int, top: int = TOP) -> dict:
    """{"ms_per_run", "ops": [{"op", "ms_per_run", "share", "calls_per_run"}...]} of `run`'s aten
    operators by self CPU time (top `top`), and the rest summed as "other"."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        run()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            run()
    wall = (time.perf_counter() - start) / runs
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [{"op": e.key, "ms_per_run": e.self_cpu_time_total / 1000 / runs, "share": e.self_cpu_time_total / total,
            "calls_per_run": e.count / runs} for e in events[:top]]
    rest = sum(e.self_cpu_time_total for e in events[top:])
    ops.append({"op": "other", "ms_per_run": rest / 1000 / runs, "share": rest / total,
                "calls_per_run": sum(e.count for e in events[top:]) / runs})
    return {"wall_ms_per_run": 1000 * wall, "ms_per_run": total / 1000 / runs, "ops": ops}


def prepared_weights_timing(theirs, ours, images: list[torch.Tensor], opts, bf16: bool) -> dict:
    """ms per image and ratio to torchvision fp32 of ours with per-call and kept weights."""
    from detector.benchmarking.timing import interleaved_times, ratio, summarize
    from detector.modeling.backbone import inference_weights

    def candidate(model, dtype, prepared: bool | None):
        runner = pytorch_runner(model, dtype)

        def run(index: int):
            if prepared is not None:
                inference_weights.ENABLED = prepared
            return runner([images[index % len(images)]])
        return run

    candidates = {"torchvision fp32": candidate(theirs, None, None),
                  "ours fp32, weights per call (before)": candidate(ours, None, False),
                  "ours fp32, weights kept (after)": candidate(ours, None, True)}
    if bf16:
        candidates["ours bf16, weights per call (before)"] = candidate(ours, torch.bfloat16, False)
        candidates["ours bf16, weights kept (after)"] = candidate(ours, torch.bfloat16, True)
    try:
        times = interleaved_times(candidates, max(opts.repeats, len(images)), opts.warmup, torch.device("cpu"),
                                  desc="profile: before/after")
    finally:
        inference_weights.ENABLED = True
    return {name: {"ms_median": 1000 * summarize(values)["median_s"],
                   "ratio_to_torchvision_fp32": ratio(values, times["torchvision fp32"])}
            for name, values in times.items()}


def run_profile(opts, device: torch.device) -> dict:
    """The section's report: {"size", "threads", "parts": {name: operator_shares(...)}}. CPU only."""
    from detector.benchmarking import peers
    from detector.benchmarking.training import training_step
    from detector.utils.hardware import cpu_has_native_bf16

    if device.type != "cpu":
        opts.log("[profile] the profile section profiles the CPU path; running it on the CPU")
    cpu = torch.device("cpu")
    bf16 = cpu_bf16(opts)
    min_size, max_size = opts.test_size
    photos = peers.coco_photos(opts.datasets / "coco128", 3)
    image, boxes, labels = photos[0]
    theirs = peers.torchvision_r50_fpn(min_size, max_size).eval()
    size = [f"model.input.min_size_test={min_size}", f"model.input.max_size_test={max_size}"]
    ours = peers.ours_with_same_weights(theirs, size).eval()
    runs, warmup = max(1, opts.repeats // 2), max(1, opts.warmup)
    parts = {}
    for name, model, dtype in (("inference fp32", ours, None), ("torchvision inference fp32", theirs, None),
                               *([("inference bf16", ours, torch.bfloat16)] if bf16 else [])):
        opts.log(f"[profile] {name} ...")
        runner = pytorch_runner(model, dtype)
        parts[name] = operator_shares(lambda: runner([image]), runs, warmup)
    opts.log(f"[profile] training step at {min_size} x {min_size} ...")
    trainee = peers.ours_with_same_weights(theirs)
    images, targets = peers.square_training_batch([(image, boxes, labels)], min_size, cpu)
    parts["training step fp32"] = operator_shares(training_step(trainee, images, targets, cpu), runs, warmup)
    del trainee
    opts.log("[profile] before/after: weights prepared per call vs kept ...")
    timing = prepared_weights_timing(theirs, ours, [photo[0] for photo in photos], opts, bf16)
    return {"size": [min_size, max_size], "image": list(image.shape[-2:]), "threads": torch.get_num_threads(),
            "runs": runs, "native_bf16": cpu_has_native_bf16(), "parts": parts, "before_after": timing,
            "timed_images": [list(photo[0].shape[-2:]) for photo in photos]}


def format_profile(report: dict) -> list[str]:
    lines = [f"profile (CPU, {report['threads']} threads; R50-FPN {report['size'][0]}/{report['size'][1]}, random "
             f"weights, a coco128 photo {report['image']}; self time per operator, mean of {report['runs']} runs)"]
    if not report["native_bf16"] and "inference bf16" not in report["parts"]:
        lines.append("  bf16 not profiled: this CPU has no native bf16 (AVX512-BF16 / AMX)")
    for name, part in report["parts"].items():
        lines.append(f"  {name}: {part['wall_ms_per_run']:.0f} ms per run (profiled; {part['ms_per_run']:.0f} ms "
                     "of operator self time)")
        for op in part["ops"]:
            lines.append(f"    {op['op']:42s} {op['ms_per_run']:9.1f} ms {100 * op['share']:5.1f} % "
                         f"{op['calls_per_run']:7.0f} calls")
    if "before_after" in report:
        lines.append(f"  before/after (interleaved rounds, coco128 photos {report['timed_images']}): ms/image (median)")
        for name, row in report["before_after"].items():
            lines.append(f"    {name:38s} {row['ms_median']:9.1f} ms {row['ratio_to_torchvision_fp32']:7.3f}x "
                         "of torchvision fp32")
    return lines
