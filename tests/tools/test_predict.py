"""tools/predict.py on a random-init checkpoint: the JSON schema and the drawn pictures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    from detector.weights.checkpoint_io import save_checkpoint
    from detector.config import load_config
    from detector.modeling.build import build_model

    cfg = load_config(["model.num_classes=2", "model.class_names=[cat,dog]", "model.fpn.out_channels=64",
                       "model.roi_heads.fc_dim=64", "model.input.min_size_test=96", "model.input.max_size_test=128"])
    model = build_model(cfg)
    path = tmp_path / "model.pth"
    save_checkpoint({"model": model.state_dict(), "iteration": 0, "config": OmegaConf.to_container(cfg, resolve=True),
                     "category_ids": [17, 18]}, path)
    return path


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_predict_writes_json_and_pictures(checkpoint, tmp_path, tta):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(images / name), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "predict.py"), "--weights", str(checkpoint),
                           "--input", str(images), "--output", str(out), "--score-thresh", "0.0", "--device", "cpu"] + (["--tta"] if tta else []),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions, "a random model at threshold 0 still proposes boxes"
    for p in predictions:
        assert set(p) == {"file_name", "bbox", "score", "category_id", "category_name"}
        assert p["file_name"] in {"a.jpg", "b.png"}
        x, y, w, h = p["bbox"]
        assert w >= 0 and h >= 0 and 0 <= x <= 128 and 0 <= y <= 96
        assert (p["category_id"], p["category_name"]) in {(17, "cat"), (18, "dog")}  # dataset ids, not labels
    drawn = cv2.imread(str(out / "a.png"))
    assert drawn.shape == (96, 128, 3)
    assert not np.array_equal(drawn, cv2.imread(str(images / "a.jpg")))  # boxes were drawn
    assert (out / "b.png").exists() and not (out / "notes.png").exists()


def test_predict_missing_input_is_a_clear_error(checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "predict.py"), "--weights", str(checkpoint),
                           "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_predict_batches_and_writes_the_folders_coco_results(checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name in ("000000000009.jpg", "000000000025.jpg", "000000000030.jpg"):
        cv2.imwrite(str(images / name), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "predict.py"), "--weights", str(checkpoint),
                           "--input", str(images), "--output", str(out), "--score-thresh", "0.0",
                           "--device", "auto", "--batch-size", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "coco_instances_results.json" in proc.stdout
    # Without a terminal, progress comes as log lines with the count.
    assert "predict: 3/3 images (100%)" in proc.stdout
    predictions = json.loads((out / "predictions.json").read_text())
    results = json.loads((out / "coco_instances_results.json").read_text())
    assert len(results) == len(predictions) > 0
    assert {r["image_id"] for r in results} <= {9, 25, 30}  # COCO file names give COCO image ids
    assert all(r["category_id"] in (17, 18) for r in results)
    from detector.cli.predict import main

    assert main(["--weights", str(checkpoint), "--input", str(images), "--output", str(out), "--batch-size", "0"]) == 2
    assert "--batch-size 0: must be at least 1" in capsys.readouterr().err
