"""End-to-end runs of tools/train_cls.py on a tiny generated ImageFolder (CPU, seconds each)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TRAIN_CLS = str(REPO / "tools" / "train_cls.py")
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200),
           "yellow": (220, 210, 40), "cyan": (40, 200, 210), "magenta": (200, 40, 190)}


def make_image_folder(root: Path, classes: list[str], per_class: tuple[int, int] = (6, 3)) -> Path:
    """Small noisy colour patches, one colour per class, in train/ and test/."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = int(rng.integers(16, 40))
                pixels = np.clip(np.array(COLOURS[name]) + rng.normal(0, 25, (size, size + 4, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg")
    return root


def run(args: list[str], timeout: float = 240, check: bool = True, launcher: list[str] | None = None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = (launcher or [sys.executable]) + [TRAIN_CLS] + args
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def tiny(root: Path, output_dir: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"output_dir={output_dir}", "data.image_size=32", "dataloader.batch_size=4",
            "dataloader.num_workers=0", "dataloader.test_batch_size=8", "solver.warmup_iters=1",
            "train.log_period=1", *extra]


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("six"), list(COLOURS))


@pytest.fixture(scope="module")
def trained(six_classes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    run(tiny(six_classes, out, "train.max_iter=4", "train.checkpoint_period=2", "data.balance=sampling"))
    return out


def test_writes_metrics_checkpoints_and_pictures(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["top5_k"] == 5
    assert metrics["top5"] >= metrics["top1"]
    assert metrics["iteration"] == 4 and metrics["num_samples"] == 18
    assert set(metrics["per_class_accuracy"]) == set(COLOURS)
    assert np.asarray(metrics["confusion_matrix"]).sum() == 18
    assert (trained / "confusion_matrix.png").stat().st_size > 0
    assert list((trained / "tb").glob("events.out.tfevents.*"))
    checkpoint = torch.load(trained / "checkpoints" / "model_final.pth", weights_only=True)
    assert checkpoint["iteration"] == 4
    assert checkpoint["config"]["model"]["class_names"] == sorted(COLOURS)
    assert checkpoint["model"]["fc.weight"].shape == (6, 512)
    assert {"optimizer", "scheduler", "rng"} <= set(checkpoint)
    assert (trained / "checkpoints" / "last.pth").is_file()


def test_resume_continues_to_the_new_max_iter(six_classes, trained, tmp_path):
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.pth").write_bytes((trained / "checkpoints" / "last.pth").read_bytes())
    proc = run(tiny(six_classes, out, "train.max_iter=6", "train.resume=true", "data.balance=sampling"))
    assert "Resumed from" in proc.stdout and "at iteration 4" in proc.stdout
    assert json.loads((out / "metrics.json").read_text())["iteration"] == 6


def test_fine_tuning_on_fewer_classes_reinitialises_the_head(trained, tmp_path):
    three = make_image_folder(tmp_path / "three", ["red", "green", "blue"], (4, 2))
    out = tmp_path / "finetune"
    weights = trained / "checkpoints" / "model_final.pth"
    proc = run(tiny(three, out, "train.max_iter=2", f"model.weights={weights}", "backbone.freeze_at=2"))
    assert "re-initialised fc.weight, fc.bias" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["top5_k"] == 3 and metrics["top5"] == 1.0  # top-5 of 3 classes is guarded as top-3
    tuned = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)["model"]
    source = torch.load(weights, weights_only=True)["model"]
    # freeze_at=2: the stem and res2 are those of the source; the head is new (3 classes).
    assert torch.equal(tuned["conv1.weight"], source["conv1.weight"])
    assert torch.equal(tuned["layer1.0.conv2.weight"], source["layer1.0.conv2.weight"])
    assert not torch.equal(tuned["layer3.0.conv1.weight"], source["layer3.0.conv1.weight"])
    assert tuned["fc.weight"].shape == (3, 512)


def test_bad_inputs_fail_with_a_clear_message(tmp_path):
    proc = run([f"output_dir={tmp_path / 'x'}"], check=False)
    assert proc.returncode != 0 and "data.root" in proc.stderr
    proc = run([f"data.root={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'y'}"], check=False)
    assert proc.returncode == 1 and "nowhere" in proc.stderr


def test_learns_colours_with_the_engine_trainer(tmp_path):
    """In-process (no interpreter start-up): 20 small steps separate 3 colours."""
    from detector.config import load_config
    from detector.engine.run import train
    from detector.tasks.classification import ClassificationTask

    root = make_image_folder(tmp_path / "data", ["red", "green", "blue"], (10, 5))
    cfg = load_config(tiny(root, tmp_path / "out", "train.max_iter=20", "backbone.depth=18",
                           "backbone.blocks_per_stage=[1,1,1,1]", "data.image_size=24", "solver.base_lr=0.05",
                           "data.balance=loss", "data.balance_strength=1.0"), config_name="cls")
    metrics = train(cfg, ClassificationTask())
    assert metrics["top1"] >= 0.8, metrics


def test_two_process_training_evaluates_like_one_process(six_classes, tmp_path):
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "ddp"
    proc = run(tiny(six_classes, out, "train.max_iter=2", "dataloader.test_batch_size=4"),
               launcher=[torchrun, "--standalone", "--nproc_per_node=2", "--max_restarts=0"], timeout=300)
    assert "Process group: 2 processes (gloo)" in proc.stdout
    assert len(list((out / "tb").iterdir())) == 1  # rank 0 alone writes
    distributed = json.loads((out / "metrics.json").read_text())
    assert distributed["num_samples"] == 18  # both shards gathered, each test image once
    # One process: eval_only of the same checkpoint, in this process (no second start of Python).
    from reliability_helpers import run_in_process

    single = tmp_path / "single"
    run_in_process(tiny(six_classes, single, "eval_only=true", f"model.weights={out / 'checkpoints' / 'model_final.pth'}"),
                   config_name="cls")
    assert json.loads((single / "metrics.json").read_text()) == distributed
