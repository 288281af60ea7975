"""Mask R-CNN end to end on tiny generated shapes (which carry exact polygons): training and
eval_only evaluate COCO segm next to bbox, and tools/predict.py writes and draws the masks."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.tools.test_train_net import run, tiny

CLASSES = {"circle", "rectangle", "triangle", "cross", "star"}
BOX_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_category"}
# A narrow mask branch keeps the run at seconds.
MASK_MODEL = ["model=mask_rcnn_fpn", "model.roi_heads.conv_dim=32"]


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory) -> Path:
    """Four iterations of Mask R-CNN, evaluated at the end."""
    root = tmp_path_factory.mktemp("shapes")
    out = tmp_path_factory.mktemp("mask_run") / "out"
    run(tiny(root, out, *MASK_MODEL, "train.max_iter=4", "train.eval_period=4"))
    return out


def fraction_or_null(value) -> bool:
    return value is None or 0.0 <= value <= 1.0


def test_training_evaluates_segm_next_to_bbox(mask_run):
    metrics = json.loads((mask_run / "metrics.json").read_text())
    assert set(metrics) == {"iteration", "bbox", "segm"} and metrics["iteration"] == 4
    assert set(metrics["segm"]) == set(metrics["bbox"]) and set(metrics["segm"]) >= BOX_KEYS
    assert set(metrics["segm"]["per_category"]) == set(metrics["bbox"]["per_category"]) == CLASSES
    for block in (metrics["bbox"], metrics["segm"]):
        numbers = [v for k, v in block.items() if k != "per_category"] + list(block["per_category"].values())
        assert all(fraction_or_null(v) for v in numbers), block

    # Every detection carries its mask: an RLE of the whole 128x128 image with str counts.
    results = json.loads((mask_run / "inference" / "coco_instances_results.json").read_text())
    assert results
    for result in results:
        assert result["segmentation"]["size"] == [128, 128] and isinstance(result["segmentation"]["counts"], str)

    # The history and results.csv carry the segm numbers the way they carry the bbox ones.
    records = [json.loads(line) for line in (mask_run / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in records if r["type"] == "eval"][-1]
    assert last_eval["segm"] == metrics["segm"] and last_eval["bbox"] == metrics["bbox"]
    with open(mask_run / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    for name in ("segm/AP", "segm/AP50", "segm/AP75", "segm_per_category/circle", "bbox/AP"):
        assert name in rows[-1], name
    assert float(rows[-1]["segm/AP"]) == pytest.approx(metrics["segm"]["AP"])

    log = (mask_run / "log.txt").read_text()
    assert "Evaluation (bbox) of 6 images" in log and "Evaluation (segm) of 6 images" in log
    assert "Per-category AP (segm):" in log


def test_tensorboard_has_the_segm_metrics(mask_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(mask_run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("bbox/AP", "segm/AP", "segm/AP50", "segm/AP75", "segm/APs", "segm_per_category/circle"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("segm/AP")] == [4]


def test_eval_only_reproduces_the_segm_numbers(mask_run, tmp_path):
    """The checkpoint evaluated again gives the training's numbers -- by the other backend
    (training used the default, faster-coco-eval), so the two agree on segm too."""
    saved = json.loads((mask_run / "metrics.json").read_text())
    config = torch.load(mask_run / "checkpoints" / "model_final.pth", weights_only=True)["config"]
    out = tmp_path / "eval"
    run(tiny(Path(config["dataset"]["root"]), out, *MASK_MODEL, "eval_only=true", "train.max_iter=4",
             "test.evaluator=pycocotools", f"model.weights={mask_run / 'checkpoints' / 'model_final.pth'}"))
    again = json.loads((out / "metrics.json").read_text())
    assert set(again) == {"iteration", "bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        for key, value in saved[iou_type].items():
            if key == "per_category":
                assert again[iou_type][key] == pytest.approx(value, abs=1e-9), (iou_type, key)
            else:
                assert again[iou_type][key] == pytest.approx(value, abs=1e-9), (iou_type, key)


def planted_full_masks(mask_run: Path, path: Path) -> Path:
    """The trained checkpoint with mask logits biased to +4: every detection's mask fills its box,
    so the pictures must show them (four iterations alone leave the masks near 0.5, i.e. empty)."""
    from detector.weights.checkpoint_io import save_checkpoint

    checkpoint = torch.load(mask_run / "checkpoints" / "model_final.pth", weights_only=True)
    bias = [key for key in checkpoint["model"] if key.startswith("roi_heads.mask_predictor.") and key.endswith(".bias")]
    logits = bias[-1]  # the last layer: the class-specific 28x28 logits
    assert checkpoint["model"][logits].numel() == 6  # background + 5 shapes
    checkpoint["model"][logits] = torch.full_like(checkpoint["model"][logits], 4.0)
    save_checkpoint(checkpoint, path)
    return path


def decoded(segmentation: dict) -> np.ndarray:
    from detector.data.masks import rle_to_mask

    return rle_to_mask(segmentation).astype(bool)


def test_predict_writes_and_draws_the_masks(mask_run, tmp_path):
    config = torch.load(mask_run / "checkpoints" / "model_final.pth", weights_only=True)["config"]
    images = Path(config["dataset"]["test"]["images"])
    inputs = sorted(images.iterdir())[:2]
    folder = tmp_path / "inputs"
    folder.mkdir()
    for path in inputs:
        (folder / path.name).write_bytes(path.read_bytes())

    # tools/predict.py (its main, in this process) on the training's own checkpoint: every
    # entry has its RLE, in both files.
    from detector.cli.predict import main

    out = tmp_path / "trained"
    assert main(["--weights", str(mask_run / "checkpoints" / "model_final.pth"), "--input", str(folder),
                 "--output", str(out), "--score-thresh", "0.0", "--device", "cpu"]) == 0
    predictions = json.loads((out / "predictions.json").read_text())
    results = json.loads((out / "coco_instances_results.json").read_text())
    assert predictions and len(predictions) == len(results)
    for prediction, result in zip(predictions, results):
        assert set(prediction) == {"file_name", "bbox", "score", "category_id", "category_name", "segmentation"}
        assert prediction["segmentation"] == result["segmentation"]
        assert prediction["segmentation"]["size"] == [128, 128]
        assert isinstance(prediction["segmentation"]["counts"], str)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{p.stem}.png" for p in inputs)

    # With masks that fill their boxes, the RLEs cover the boxes and the pictures are tinted there.
    # The planted model has the same boxes and scores: keep its five best on the first image.
    from detector.tasks.prediction import predict_images

    scores = sorted((p["score"] for p in predictions if p["file_name"] == inputs[0].name), reverse=True)
    weights = planted_full_masks(mask_run, tmp_path / "full_masks.pth")
    out = tmp_path / "full"
    predictions = predict_images(weights, [folder / inputs[0].name], out, score_thresh=scores[4] - 1e-6, device="cpu")
    assert 5 <= len(predictions) < 10
    original = cv2.imread(str(inputs[0]))
    drawn = cv2.imread(str(out / f"{inputs[0].stem}.png"))
    union = np.zeros(original.shape[:2], bool)
    boxes, texts, scores = [], [], []
    for prediction in predictions:
        mask = decoded(prediction["segmentation"])
        x, y, w, h = prediction["bbox"]
        inside = mask[int(np.ceil(y)) + 1:int(y + h) - 1, int(np.ceil(x)) + 1:int(x + w) - 1]
        assert inside.size and inside.mean() > 0.9, prediction  # the box is filled
        assert mask.sum() <= (w + 2) * (h + 2)  # and nothing far outside it
        union |= mask
        boxes.append([x, y, x + w, y + h])
        texts.append(prediction["category_name"])
        scores.append(prediction["score"])
    # Against the same boxes drawn without masks: the fill changes the pixels of the masks, under
    # the boxes' lines and captions (drawn on top, the same in both), and nothing else.
    from detector.utils.draw import draw_boxes

    boxes_only = draw_boxes(original[:, :, ::-1], np.array(boxes), texts, np.array(scores))[:, :, ::-1]
    changed = np.abs(drawn.astype(int) - boxes_only.astype(int)).sum(axis=2) > 0
    assert not changed[~union].any()
    assert changed[union].mean() > 0.5
