"""Shared pieces of the reliability tests: a tiny training configuration and subprocess runs.

Every run here trains a half-width ResNet-18 on a handful of 96 px generated images on the
CPU (about 0.2 s per iteration); what costs time is starting Python, so each test keeps
the number of processes it starts small.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
TRAIN_NET = str(TOOLS / "train_net.py")
# Test-only launcher that can slow a checkpoint write or make one rank fail (see its docstring).
FAULTS = str(Path(__file__).with_name("train_net_faults.py"))


# A tiny detector and schedule: seconds per run on the CPU.
TINY_MODEL = [
    "model.input.min_size_test=96",
    "model.input.max_size_test=96",
    "aug.min_size=[96]",
    "aug.max_size=96",
    "dataloader.batch_size=2",
    "dataloader.num_workers=0",
    "train.device=cpu",
    "train.log_period=1",
    "train.vis_period_images=0",
    "solver.warmup_iters=2",
    "model.rpn.pre_nms_topk_train=100",
    "model.rpn.post_nms_topk_train=50",
    "model.rpn.pre_nms_topk_test=50",
    "model.rpn.post_nms_topk_test=20",
    "model.roi_heads.batch_size_per_image=16",
    "model.roi_heads.fc_dim=32",
    "model.fpn.out_channels=32",
]


def tiny(root: Path, output_dir: Path, *extra: str) -> list[str]:
    """train_net overrides for a run of a few seconds on the generated shapes: 8 images of 96 px."""
    return [
        f"output_dir={output_dir}",
        f"dataset.root={root}",
        "dataset.num_train=8",
        "dataset.num_test=2",
        "dataset.image_size=96",
        "dataset.object_size=[16,48]",
        *TINY_MODEL,
        *extra,
    ]


def tiny_coco(images: Path, annotations: Path, output_dir: Path, *extra: str) -> list[str]:
    """The same tiny run on a COCO-format folder (used for both the train and the test split)."""
    data = [f"dataset.{split}.{key}={value}" for split in ("train", "test")
            for key, value in (("images", images), ("annotations", annotations))]
    return [f"output_dir={output_dir}", "dataset=coco_format", *data, *TINY_MODEL, *extra]


def tool_env(**extra: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)


def run_tool(script: str | Path, args: list[str], timeout: float = 180, launcher: list[str] | None = None,
             env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + [str(script)] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or tool_env(), cwd=REPO)


def train_net(args: list[str], timeout: float = 180, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = run_tool(TRAIN_NET, args, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"train_net failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assert_clean_failure(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """A non-zero exit whose stderr holds every expected text and no Python traceback."""
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    for part in expected:
        assert part in proc.stderr, (part, proc.stderr[-3000:])
    return proc.stderr


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(poll)


def observe(fault: str, seen: str, lost: str) -> None:
    """Record what a user sees for a fault (for the closing table of issue 7): appended as a
    JSON line to $RELIABILITY_OBSERVATIONS when set, a no-op otherwise."""
    target = os.environ.get("RELIABILITY_OBSERVATIONS")
    if not target:
        return
    import json
    import re

    text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s']+", "<tmp>", seen.strip())
    with open(target, "a") as handle:
        handle.write(json.dumps({"fault": fault, "seen": text, "lost": lost}) + "\n")


def run_in_process(args: list[str], config_name: str = "config", task=None):
    """What tools/train_net.py (config_name "config") or tools/train_cls.py ("cls") does with the
    same arguments, in this process, without a second start of Python and torch (seconds each):
    the commands' own launch.start (config check, output folder, train or eval_only) with these
    arguments as the command line. On one intra-op thread, as the tools run in the tests'
    subprocesses (OMP_NUM_THREADS=1), so the numbers are those a subprocess gets. Returns the
    metrics."""
    import torch

    from detector.config import load_config
    from detector.engine.launch import start

    if task is None:
        if config_name == "cls":
            from detector.tasks.classification import ClassificationTask as task_class
        else:
            from detector.tasks.detection import DetectionTask as task_class
        task = task_class()
    args = [str(a) for a in args]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return start(load_config(args, config_name=config_name), task, overrides=args)
    finally:
        torch.set_num_threads(threads)
