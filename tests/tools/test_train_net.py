"""End-to-end runs of tools/train_net.py on a tiny generated dataset (CPU, seconds each)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = str(REPO / "tools" / "train_net.py")


def tiny(root: Path, output_dir: Path, *extra: str) -> list[str]:
    """Overrides for a run of a few seconds: 16 small images, batch 2, 128 px."""
    return [
        f"output_dir={output_dir}",
        f"dataset.root={root}",
        "dataset.num_train=16",
        "dataset.num_test=6",
        "dataset.image_size=128",
        "model.input.min_size_test=128",
        "model.input.max_size_test=128",
        "aug.min_size=[128]",
        "aug.max_size=128",
        "dataloader.batch_size=2",
        "dataloader.num_workers=1",
        "train.log_period=2",
        "train.vis_period_images=2",
        "solver.warmup_iters=2",
        "model.rpn.pre_nms_topk_train=200",
        "model.rpn.post_nms_topk_train=100",
        "model.rpn.pre_nms_topk_test=100",
        "model.rpn.post_nms_topk_test=50",
        "model.roi_heads.batch_size_per_image=32",
        "model.roi_heads.fc_dim=64",
        "model.fpn.out_channels=64",
        *extra,
    ]


def run(args: list[str], timeout: float = 240, check: bool = True, launcher: list[str] | None = None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = (launcher or [sys.executable]) + [TRAIN_NET] + args
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def final_weights(output_dir: Path) -> dict:
    return torch.load(output_dir / "checkpoints" / "model_final.pth", weights_only=True)["model"]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shapes")


@pytest.fixture(scope="module")
def trained(shapes_root, tmp_path_factory) -> Path:
    """One short run with a mid-way evaluation, shared by the output checks below."""
    out = tmp_path_factory.mktemp("run") / "out"
    run(tiny(shapes_root, out, "train.max_iter=6", "train.eval_period=3", "train.checkpoint_period=3"))
    return out


def test_outputs_are_those_of_the_interface(trained):
    names = sorted(p.name for p in trained.iterdir())
    assert names == ["checkpoints", "config.yaml", "eval", "inference", "label_stats.png", "log.txt", "metrics.json",
                     "metrics.jsonl", "model_summary.json", "results.csv", "summary.md", "tb"]
    # test.analysis=final (the default): the pictures of the final evaluation only, not of the one at 3,
    # linked from summary.md (every evaluation's: tests/engine/test_run_folder.py).
    assert [p.name for p in (trained / "eval").iterdir()] == ["6"]
    assert (trained / "eval" / "6" / "gt_vs_predictions.png").stat().st_size > 1000
    assert "eval/6/gt_vs_predictions.png" in (trained / "summary.md").read_text()
    summary = json.loads((trained / "model_summary.json").read_text())
    assert summary["image_size"] == [128, 128] and summary["gflops"] > 0
    assert summary["params"] == summary["trainable_params"] > 0
    assert "Model summary: " in (trained / "log.txt").read_text()
    # previous.pth: the checkpoint before last.pth (iteration 3), the fallback for a damaged last.pth
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["last.pth", "model_best.pth", "model_final.pth",
                                                                           "previous.pth"]
    checkpoint = torch.load(trained / "checkpoints" / "model_final.pth", weights_only=True)
    assert checkpoint["iteration"] == 6
    assert checkpoint["config"]["model"]["num_classes"] == 5
    assert checkpoint["config"]["model"]["class_names"] == ["circle", "rectangle", "triangle", "cross", "star"]
    assert {"optimizer", "scheduler", "rng"} <= set(checkpoint)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["iteration"] == 6
    assert set(metrics["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_category"}
    assert set(metrics["bbox"]["per_category"]) == {"circle", "rectangle", "triangle", "cross", "star"}
    assert 0.0 <= metrics["bbox"]["AP"] <= 1.0
    results = json.loads((trained / "inference" / "coco_instances_results.json").read_text())
    gt = json.loads(Path(checkpoint["config"]["dataset"]["test"]["annotations"]).read_text())
    assert results and {r["category_id"] for r in results} <= {c["id"] for c in gt["categories"]}
    assert {r["image_id"] for r in results} <= {i["id"] for i in gt["images"]}
    config_text = (trained / "config.yaml").read_text()
    assert "num_classes: 5" in config_text and "${" not in config_text  # resolved


def test_every_checkpoint_carries_the_datasets_category_ids(trained):
    """The detection task's checkpoint entry (Task.checkpoint_extras), which predictions outside
    a dataset report: the category id of each label, in label order."""
    config = torch.load(trained / "checkpoints" / "model_final.pth", weights_only=True)["config"]
    gt = json.loads(Path(config["dataset"]["train"]["annotations"]).read_text())
    by_name = {c["name"]: int(c["id"]) for c in gt["categories"]}
    expected = [by_name[name] for name in config["model"]["class_names"]]
    for name in ("last.pth", "previous.pth", "model_best.pth", "model_final.pth"):
        assert torch.load(trained / "checkpoints" / name, weights_only=True)["category_ids"] == expected, name


def test_log_shows_progress(trained):
    log = (trained / "log.txt").read_text()
    lines = [line for line in log.splitlines() if "iter: " in line]
    logged = [line.split("iter: ")[1].split()[0] for line in lines]
    assert {"2/6", "4/6", "6/6"} <= set(logged) and logged == sorted(set(logged), key=lambda s: int(s.split("/")[0]))
    for key in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "lr:", "s/it",
                "data_time:", "eta:", "max_mem:"):
        assert key in lines[-1], key
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in log
    assert "Bad training samples skipped" in log


def test_tensorboard_has_losses_lr_metrics_and_pictures(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((trained / "tb").iterdir())
    assert len(files) == 1
    events = EventAccumulator(str(trained / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss_classifier", "train/loss_box_reg", "train/loss_objectness", "train/loss_rpn_box_reg",
                "train/total_loss", "train/lr", "bbox/AP", "bbox/AP50", "bbox_per_category/circle"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("bbox/AP")] == [3, 6]  # evaluations after iterations 3 and 6
    images = events.Tags()["images"]
    assert "predictions/0" in images and len(events.Images("predictions/0")) == 2


def test_eval_only_reproduces_the_final_metrics(trained, tmp_path):
    saved = json.loads((trained / "metrics.json").read_text())
    config = torch.load(trained / "checkpoints" / "model_final.pth", weights_only=True)["config"]
    out = tmp_path / "eval"
    run(tiny(Path(config["dataset"]["root"]), out, "eval_only=true", "train.max_iter=6",
             f"model.weights={trained / 'checkpoints' / 'model_final.pth'}"))
    again = json.loads((out / "metrics.json").read_text())
    assert again == saved


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(shapes_root, tmp_path):
    out = tmp_path / "nan"
    proc = run(tiny(shapes_root, out, "train.max_iter=12", "train.checkpoint_period=1", "solver.base_lr=1e6",
                    "train.vis_period_images=0"), check=False)
    assert proc.returncode == 1
    message = proc.stderr.strip().splitlines()[-1]
    assert "Non-finite loss at iteration" in message or "hold NaN/inf" in message, proc.stderr[-2000:]
    if "Non-finite loss" in message:
        assert "loss_classifier=" in message and "loss_rpn_box_reg=" in message
    last = torch.load(out / "checkpoints" / "last.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (out / "checkpoints" / "model_final.pth").exists()


@pytest.mark.parametrize(
    "override,expected",
    [
        ("solver.base_lr=-0.1", "solver.base_lr=-0.1"),
        ("dataloader.batch_size=0", "dataloader.batch_size=0"),
        ("model.input.min_size_test=900", "min_size_test=900"),
        ("aug.max_size=100", "aug.max_size=100"),
        ("train.ema.enabled=true train.ema.ramp=0", "train.ema.ramp=0"),
        ("train.ema.enabled=true train.ema.decay=1.5", "train.ema.decay=1.5"),
    ],
)
def test_bad_config_values_are_rejected_before_work(override, expected, tmp_path):
    from detector.config import load_config
    from detector.engine.config_checks import ConfigError
    from detector.tasks.detection import DetectionTask

    cfg = load_config([f"output_dir={tmp_path}", *override.split(), "model.input.max_size_test=800"])
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        DetectionTask().check_config(cfg)


def test_missing_dataset_and_unwritable_output_fail_at_once(tmp_path):
    proc = run(["dataset=coco_format", f"output_dir={tmp_path / 'a'}", "dataset.train.images=/nonexistent/imgs",
                "dataset.train.annotations=/nonexistent/train.json", "dataset.test.images=/nonexistent/imgs",
                "dataset.test.annotations=/nonexistent/test.json"], check=False, timeout=60)
    assert proc.returncode == 1 and "dataset.train.images=/nonexistent/imgs does not exist" in proc.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run([f"output_dir={blocker / 'out'}"], check=False, timeout=60)
    assert proc.returncode == 1 and "is not writable" in proc.stderr
