"""torchrun with two CPU processes (gloo): one set of outputs, metrics equal to one process."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from reliability_helpers import run_in_process
from test_train_net import run, tiny


def test_two_process_training_writes_once_and_evaluates_like_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    root, out = tmp_path / "shapes", tmp_path / "ddp"
    proc = run(
        tiny(root, out, "train.max_iter=4", "train.checkpoint_period=2", "dataset.num_test=7", "solver.reference_batch_size=8",
             "solver.base_lr=0.02", "model.roi_heads.score_thresh=0.0"),  # detections on every image
        launcher=[torchrun, "--standalone", "--nproc_per_node=2", "--max_restarts=0"], timeout=300,
    )
    assert "Process group: 2 processes (gloo)" in proc.stdout
    # Rank 0 alone wrote: one event file, one log whose lines are not doubled.
    assert len(list((out / "tb").iterdir())) == 1
    log = (out / "log.txt").read_text()
    # last.pth at 2; last.pth, model_final.pth and model_best.pth (the only evaluation) at 4
    assert log.count("Saved checkpoint") == log.count("iteration 2).") + log.count("iteration 4).") == 4
    assert "Peak lr 0.01 = solver.base_lr 0.02 x total batch 4 / 8" in log  # lr scaled by the world size
    distributed = json.loads((out / "metrics.json").read_text())
    results = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    assert len({r["image_id"] for r in results}) == 7  # each test image once, from both shards

    # One process: eval_only of the same checkpoint, in this process (no second start of Python).
    single = tmp_path / "single"
    run_in_process(tiny(root, single, "dataset.num_test=7", "eval_only=true", "train.max_iter=4",
             f"model.weights={out / 'checkpoints' / 'model_final.pth'}"))
    assert json.loads((single / "metrics.json").read_text()) == distributed
    assert json.loads((single / "inference" / "coco_instances_results.json").read_text()) == results
