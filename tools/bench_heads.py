#!/usr/bin/env python
"""Benchmark (not a test): detector heads against Faster R-CNN at equal wall time, side by side.

    python tools/bench_heads.py                                   # shapes: mask_rcnn_fpn vs faster_rcnn_fpn
    python tools/bench_heads.py --dataset bccd --model cascade_rcnn_fpn --baseline-iters 1450 --seeds 42 1 2
    python tools/bench_heads.py --model keypoint_rcnn_fpn --model-override model.roi_heads.keypoint_head.conv_dim=64
    python tools/bench_heads.py --model retinanet_fpn --model fcos_fpn --baseline-iters 1000   # one baseline, two heads

For each seed the trainings start at the same time with one thread each, so they share the
machine fairly. Each head keeps its recipe's iterations; the baseline gets --baseline-iters, which
should make them take the same time (set it from the per-iteration ratio measured a few hundred
iterations in: the first tens cost less, as the keypoint and mask heads get few positive
proposals then). The wall and CPU seconds of each run are printed. Several --model heads share one baseline run, which is fair when their
iterations cost about the same. Prints each run's wall time and its bbox (and segm, or keypoints)
AP / AP50 / AP75 / APs, then the medians over seeds. --model-override gives the measured heads alone
a setting (e.g. a narrower keypoint head for a CPU recipe, whose key the baseline does not have).
Every command is printed before it runs, to reproduce by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = ("AP", "AP50", "AP75", "APs")   # APs: small objects (keypoints have no small area)
KINDS = ("bbox", "segm", "keypoints")   # the metrics.json blocks a head may write


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    print("$ OMP_NUM_THREADS=1 " + " ".join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def finished(process: subprocess.Popen) -> float | None:
    """The CPU seconds (user + system, its reaped children's included: the data-loading worker)
    of a run that has ended, else None. os.wait4 reaps it and reports them, unlike Popen.poll."""
    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    if pid == 0:
        return None
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def run_side_by_side(commands: dict[str, tuple[list[str], Path]]) -> dict[str, tuple[float, float]]:
    """Starts every command at once; returns each one's (wall seconds, CPU seconds). Fails naming the
    log of a failed run. With one thread per run the CPU seconds are the run's cost whatever else
    the machine did; the wall seconds are equal-time only when the runs shared the machine alike."""
    began = time.perf_counter()
    running = {name: start(cmd, out.with_suffix(".log")) for name, (cmd, out) in commands.items()}
    seconds: dict[str, tuple[float, float]] = {}
    while len(seconds) < len(running):  # poll, so each run's own end time is recorded
        for name, process in running.items():
            if name in seconds or (cpu := finished(process)) is None:
                continue
            seconds[name] = (time.perf_counter() - began, cpu)
            if process.returncode != 0:
                for other in running.values():
                    other.kill()
                log = commands[name][1].with_suffix(".log")
                raise SystemExit(f"{name} failed (exit {process.returncode}); its output is in {log}")
        time.sleep(0.5)
    return seconds


def scores(metrics: dict) -> str:
    return "   ".join(f"{kind} " + " / ".join(f"{metrics[kind][k]:.4f}" for k in KEYS if k in metrics[kind])
                      for kind in KINDS if kind in metrics)


def training_commands(args: argparse.Namespace, heads: list[str], seed: int,
                      folder: Path) -> dict[str, tuple[list[str], Path]]:
    """One train_net command per run: the baseline at --baseline-iters, each head at its recipe's iterations."""
    common = [f"dataset={args.dataset}", "dataloader.num_workers=1", *args.overrides, f"seed={seed}"]
    iters = args.baseline_iters
    baseline_out = folder / args.baseline
    commands = {args.baseline: ([sys.executable, "tools/train_net.py", f"model={args.baseline}", *common,
                                 f"train.max_iter={iters}", f"train.checkpoint_period={iters}",
                                 f"output_dir={baseline_out}"], baseline_out)}
    for head in heads:
        commands[head] = ([sys.executable, "tools/train_net.py", f"model={head}", *common, *args.model_override,
                           f"output_dir={folder / head}"], folder / head)
    return commands


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes", help="dataset config group (default: shapes)")
    parser.add_argument("--model", action="append", default=None,
                        help="a head to measure (model config group; repeatable; default mask_rcnn_fpn)")
    parser.add_argument("--baseline", default="faster_rcnn_fpn", help="the head to compare with")
    parser.add_argument("--baseline-iters", type=int, default=1400,
                        help="baseline iterations, chosen so that every run takes the same time")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one side-by-side pair per seed")
    parser.add_argument("--output", default="outputs/bench_heads", help="parent folder of the runs and their logs")
    parser.add_argument("--model-override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the measured heads' runs only (repeatable)")
    parser.add_argument("overrides", nargs="*", help="config overrides given to both runs")
    return parser.parse_intermixed_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    heads = args.model or ["mask_rcnn_fpn"]
    results: dict[str, list[dict]] = {name: [] for name in [args.baseline, *heads]}
    for seed in args.seeds:
        folder = Path(args.output) / f"{args.dataset}_seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        commands = training_commands(args, heads, seed, folder)
        seconds = run_side_by_side(commands)
        for name, (_, out) in commands.items():
            metrics = json.loads((out / "metrics.json").read_text())
            results[name].append(metrics)
            wall, cpu = seconds[name]
            print(f"seed {seed}  {name:<24} wall {wall:7.1f} s  cpu {cpu:7.1f} s   {scores(metrics)}", flush=True)

    if len(args.seeds) > 1:
        for name, runs in results.items():
            medians = {kind: {k: statistics.median(run[kind][k] for run in runs) for k in KEYS if k in runs[0][kind]}
                       for kind in KINDS if kind in runs[0]}
            print(f"median over {len(runs)} seeds  {name:<24} {scores(medians)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
