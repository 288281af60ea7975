"""The run folder of tiny tools/train_net.py runs: metrics.jsonl and results.csv, the best
checkpoint, early stopping (also across a SIGKILL and resume), the pictures of every
evaluation on disk and in TensorBoard, summary.md, and tools/plot_runs.py on two runs."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from reliability_helpers import REPO, TRAIN_NET, tiny, tool_env, train_net, wait_for  # on pytest.ini's pythonpath

EVAL_PICTURES = ("pr_curves", "confusion_matrix", "error_breakdown", "size_breakdown", "gt_vs_predictions")
# A model that cannot change (frozen norms, a learning rate below float32 resolution): every
# evaluation gives the same AP, so only the first one is an improvement.
FROZEN = ["backbone.norm=frozen_bn", "solver.base_lr=1e-12"]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def iterations(run: Path, kind: str) -> list[int]:
    return [r["iteration"] for r in records(run) if r["type"] == kind]


def checkpoint_iteration(path: Path) -> int:
    return torch.load(path, weights_only=True)["iteration"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("run_folder") / "shapes"


@pytest.fixture(scope="module")
def run_with_evaluations(shapes, tmp_path_factory) -> Path:
    """Six iterations, logged every second one, evaluated every second one."""
    out = tmp_path_factory.mktemp("history") / "out"
    train_net(tiny(shapes, out, "train.max_iter=6", "train.log_period=2", "train.eval_period=2",
                   "train.checkpoint_period=2", "test.analysis=true", "test.analysis_grid_images=2"))
    return out


def test_metrics_jsonl_has_one_line_per_log_period_and_evaluation(run_with_evaluations):
    run = run_with_evaluations
    assert iterations(run, "train") == [2, 4, 6]
    assert iterations(run, "eval") == [2, 4, 6]
    train = next(r for r in records(run) if r["type"] == "train")
    for key in ("total_loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "lr", "time",
                "data_time", "max_mem"):
        assert isinstance(train[key], float), key
    evaluation = [r for r in records(run) if r["type"] == "eval"][-1]
    assert set(evaluation["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
                                       "ARl", "per_category"}
    assert set(evaluation["bbox"]["per_category"]) == {"circle", "rectangle", "triangle", "cross", "star"}
    # metrics.json stays the latest evaluation, with the same numbers
    latest = json.loads((run / "metrics.json").read_text())
    assert latest["iteration"] == 6 and latest["bbox"] == evaluation["bbox"]
    with open(run / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["iteration"]) for row in rows] == [2, 4, 6]
    assert float(rows[-1]["bbox/AP"]) == pytest.approx(evaluation["bbox"]["AP"])
    assert "bbox_per_category/star" in rows[0]


def test_model_best_is_the_evaluation_with_the_best_ap(run_with_evaluations):
    run = run_with_evaluations
    evals = [(r["iteration"], r["bbox"]["AP"]) for r in records(run) if r["type"] == "eval"]
    best_ap = max(ap for _, ap in evals)
    best_iteration = next(it for it, ap in evals if ap == best_ap)  # the first to reach it: later ties do not improve
    best = torch.load(run / "checkpoints" / "model_best.pth", weights_only=True)
    assert best["iteration"] == best_iteration
    assert best["best"]["best_value"] == pytest.approx(best_ap)
    assert f"at iteration {best_iteration}" in (run / "log.txt").read_text()
    if best_iteration == 6:
        final = torch.load(run / "checkpoints" / "model_final.pth", weights_only=True)["model"]
        assert all(torch.equal(final[k], best["model"][k]) for k in final)


def test_pictures_at_every_evaluation_on_disk_and_in_tensorboard(run_with_evaluations):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = run_with_evaluations
    assert sorted(int(p.name) for p in (run / "eval").iterdir()) == [2, 4, 6]
    for iteration in (2, 4, 6):
        folder = run / "eval" / str(iteration)
        for name in EVAL_PICTURES:
            assert (folder / f"{name}.png").stat().st_size > 1000, (iteration, name)
        analysis = json.loads((folder / "analysis.json").read_text())
        assert {row["image_id"] for row in analysis["per_image"]} and "pr_curves" in analysis
    assert (run / "label_stats.png").stat().st_size > 1000
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    for name in EVAL_PICTURES:
        assert [e.step for e in events.Images(f"eval/{name}")] == [2, 4, 6], name
        assert events.Images(f"eval/{name}")[0].width > 100
    assert "data/label_stats" in tags


def test_summary_md_has_overrides_metrics_classes_time_and_links(run_with_evaluations):
    run = run_with_evaluations
    text = (run / "summary.md").read_text()
    for part in ("## Configuration overrides", "train.eval_period=2", "## Metrics (%)", "| star |", "bbox/AP50",
                 "## Time and throughput", "images/s", "## Pictures", "eval/6/pr_curves.png", "label_stats.png"):
        assert part in text, part
    for link in [part.split("](")[1].split(")")[0] for part in text.split("[")[1:] if "](" in part]:
        assert (run / link).exists(), link


@pytest.fixture(scope="module")
def early_stopped(shapes, tmp_path_factory) -> tuple[Path, list[str], str]:
    """Patience 3, an evaluation every 2 iterations, AP frozen: best at 2, then 4, 6, 8
    without improvement -> stop at 8 of 40. Killed after iteration 5, then resumed.
    The folder sits in a sweep-like parent (sweep/0), as a Hydra multirun job's would."""
    out = tmp_path_factory.mktemp("sweep") / "0"
    args = tiny(shapes, out, "train.max_iter=40", "train.eval_period=2", "train.checkpoint_period=2",
                "train.early_stop_patience=3", "test.analysis=false", "train.resume=true", *FROZEN)
    with open(out.parent / "attempt1.log", "w") as log:
        proc = subprocess.Popen([sys.executable, TRAIN_NET, *args], cwd=REPO, env=tool_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: (out / "log.txt").is_file() and "iter: 5/40" in (out / "log.txt").read_text(), 240,
                 "iteration 5", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert checkpoint_iteration(out / "checkpoints" / "last.pth") in (4, 6)
    resumed = train_net(args)
    return out, args, resumed.stdout


def test_early_stop_after_patience_survives_sigkill_and_resume(early_stopped):
    """The resumed run stops where the records say it must, every iteration is once in
    metrics.jsonl, and a further resume stays stopped."""
    out, args, stdout = early_stopped
    assert "Resumed from" in stdout
    evals = [(r["iteration"], r["bbox"]["AP"]) for r in records(out) if r["type"] == "eval"]
    # The stop the records call for: the first evaluation with 3 non-improving ones since the best.
    best, since, expected = None, 0, None
    for iteration, ap in evals:
        if best is None or ap > best:
            best, since = ap, 0
        else:
            since += 1
        if since == 3:
            expected = iteration
            break
    assert expected == 8 and evals[-1][0] == 8, evals
    assert "Training stopped at iteration 8 of 40: early stopping" in stdout
    for kind in ("train", "eval"):
        seen = Counter(iterations(out, kind))
        assert all(n == 1 for n in seen.values()), (kind, seen)
    assert iterations(out, "train") == list(range(1, 9))
    assert [it for it, _ in evals] == [2, 4, 6, 8]
    assert checkpoint_iteration(out / "checkpoints" / "model_final.pth") == 8
    assert checkpoint_iteration(out / "checkpoints" / "model_best.pth") == 2
    assert json.loads((out / "metrics.json").read_text())["iteration"] == 8  # the final evaluation is written
    assert "stopped at iteration 8: early stopping" in (out / "summary.md").read_text()

    again = train_net(args)
    assert "stopped early at iteration 8" in again.stdout and "iter: 9/40" not in again.stdout
    assert iterations(out, "eval") == [2, 4, 6, 8] and iterations(out, "train") == list(range(1, 9))


def test_plot_runs_on_two_runs_writes_plots_and_table(run_with_evaluations, early_stopped, tmp_path):
    """A run folder and a sweep-like folder holding the other run (one line per job)."""
    from detector.cli.plot_runs import main

    job = early_stopped[0]
    (job / ".hydra").mkdir(exist_ok=True)
    (job / ".hydra" / "overrides.yaml").write_text("- train.early_stop_patience=3\n- solver.base_lr=1e-12\n")
    output = tmp_path / "compared"
    assert main([str(run_with_evaluations), str(job.parent), "--output", str(output)]) == 0
    for name in ("loss.png", "lr.png", "ap.png"):
        assert (output / name).stat().st_size > 5000, name
    table = (output / "runs.md").read_text().splitlines()
    assert len(table) == 4  # header, rule, one row per run
    job_label = f"{job.parent.name}/0"
    assert "train.early_stop_patience=3 solver.base_lr=1e-12" in next(line for line in table if job_label in line)
    with open(output / "runs.csv") as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    evals = [(r["iteration"], r["bbox"]["AP"]) for r in records(run_with_evaluations) if r["type"] == "eval"]
    row = rows[run_with_evaluations.name]
    assert float(row["final"]) == pytest.approx(evals[-1][1]) and int(row["final_iteration"]) == 6
    assert float(row["best"]) == pytest.approx(max(ap for _, ap in evals))
    assert "train.eval_period=2" in row["overrides"]  # the config diff when Hydra left no overrides.yaml
    assert rows[job_label]["final_iteration"] == "8" and rows[job_label]["best_iteration"] == "2"
