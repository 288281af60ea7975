"""Mask R-CNN end to end on tiny generated shapes (which carry exact polygons): training and
eval_only evaluate COCO segm next to bbox, and tools/predict.py writes and draws the masks."""
from __future__ import annotations

import csv
import json
import math
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


DISC_SIZE = 64   # px, the side of the images; each holds one disc of this diameter
MASK_IOU_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]   # COCO's AP thresholds


def disc_polygon(points: int = 32) -> list[float]:
    """The disc inscribed in the image, as a COCO polygon: its box is the whole image."""
    r = DISC_SIZE / 2
    return [round(v, 4) for k in range(points)
            for v in (r + r * math.cos(2 * math.pi * k / points), r + r * math.sin(2 * math.pi * k / points))]


def write_discs(root: Path) -> list[str]:
    """A COCO-format dataset of one class, "disc": 2 training and 3 test images, each one disc
    filling the image (noise around it); returns the dataset overrides."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for split, ids in (("train", [1, 2]), ("test", [3, 4, 5])):
        images, annotations = [], []
        for i in ids:
            image = rng.integers(0, 60, (DISC_SIZE, DISC_SIZE, 3), dtype=np.uint8)
            cv2.circle(image, (DISC_SIZE // 2, DISC_SIZE // 2), DISC_SIZE // 2, (200, 200, 200), -1)
            cv2.imwrite(str(root / "images" / f"{i}.png"), image)
            images.append({"id": i, "file_name": f"{i}.png", "width": DISC_SIZE, "height": DISC_SIZE})
            annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, DISC_SIZE, DISC_SIZE],
                                "area": math.pi * (DISC_SIZE / 2) ** 2, "iscrowd": 0, "segmentation": [disc_polygon()]})
        coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "disc"}]}
        (root / f"{split}.json").write_text(json.dumps(coco))
    return ["dataset=coco_format", f"dataset.train.images={root / 'images'}", f"dataset.test.images={root / 'images'}",
            f"dataset.train.annotations={root / 'train.json'}", f"dataset.test.annotations={root / 'test.json'}"]


def disc_overrides(data: list[str], out: Path, *extra: str) -> list[str]:
    return [f"output_dir={out}", *data, *MASK_MODEL, f"model.input.min_size_test={DISC_SIZE}",
            f"model.input.max_size_test={DISC_SIZE}", f"aug.min_size=[{DISC_SIZE}]", f"aug.max_size={DISC_SIZE}",
            "model.fpn.out_channels=64", "model.roi_heads.fc_dim=64", "model.rpn.pre_nms_topk_train=200",
            "model.rpn.post_nms_topk_train=100", "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=50",
            "model.roi_heads.batch_size_per_image=32", "dataloader.batch_size=2", "dataloader.num_workers=0",
            "train.vis_period_images=0", "test.analysis=off", *extra]


def plant_whole_image_detector(model: torch.nn.Module) -> None:
    """Weights that find every disc exactly, whatever the features: the classifier says "disc"
    (bias 10 against 0), every box grows past the image (width and height deltas at the clamp)
    and is clipped to it, and the mask logits are +10 everywhere (all-ones masks)."""
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        predictor.cls_score.weight.zero_()
        predictor.cls_score.bias.copy_(torch.tensor([0.0, 10.0]))
        predictor.bbox_pred.weight.zero_()
        predictor.bbox_pred.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 50.0] * 2))   # (dx, dy, dw, dh) per class
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.zero_()
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(10.0)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> tuple[list[str], Path]:
    """One iteration (at a negligible lr) of Mask R-CNN from planted weights on the discs,
    evaluated at the end, in this process: the dataset overrides and the output folder."""
    from omegaconf import OmegaConf

    from detector.config import load_config
    from detector.engine.run import train
    from detector.modeling.build import build_model
    from detector.tasks.detection import DetectionTask
    from detector.weights.checkpoint_io import save_checkpoint

    root = tmp_path_factory.mktemp("discs")
    data = write_discs(root / "data")
    cfg = load_config(disc_overrides(data, root / "unused"))
    model = build_model(cfg)
    plant_whole_image_detector(model)
    planted = save_checkpoint({"model": model.state_dict(), "iteration": 0,
                               "config": OmegaConf.to_container(cfg, resolve=True)}, root / "planted.pth")
    out = root / "run"
    train(load_config(disc_overrides(data, out, f"model.weights={planted}", "train.max_iter=1",
                                     "train.eval_period=1", "train.checkpoint_period=1", "solver.base_lr=1e-9",
                                     "solver.warmup_iters=0")), DetectionTask())
    return data, out


def test_eval_only_reproduces_the_segm_numbers(planted_run, tmp_path):
    """A checkpoint that finds the discs: box AP 1; its all-ones masks cover each disc's box,
    so the mask IoU is the disc's share of its box (about pi/4) and segm AP the share of COCO's
    ten IoU thresholds at or under it (0.6), computed here from the rasterised polygon. The
    checkpoint evaluated again (eval_only, by the other backend: training used the default,
    faster-coco-eval) gives exactly the training's numbers."""
    from detector.data.masks import annotation_to_mask

    data, run_dir = planted_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    disc = annotation_to_mask({"segmentation": [disc_polygon()]}, DISC_SIZE, DISC_SIZE)
    iou = disc.sum() / DISC_SIZE**2
    expected_segm_ap = float(np.mean([iou >= t for t in MASK_IOU_THRESHOLDS]))
    assert expected_segm_ap == pytest.approx(0.6)   # pi/4 = 0.785: thresholds 0.5 .. 0.75
    assert saved["iteration"] == 1
    assert saved["bbox"]["AP"] == pytest.approx(1.0) and saved["bbox"]["per_category"]["disc"] == pytest.approx(1.0)
    assert saved["segm"]["AP"] == pytest.approx(expected_segm_ap)
    assert (saved["segm"]["AP50"], saved["segm"]["AP75"]) == pytest.approx((1.0, 1.0))

    out = tmp_path / "eval"
    run(disc_overrides(data, out, "eval_only=true", "test.evaluator=pycocotools",
                       f"model.weights={run_dir / 'checkpoints' / 'model_final.pth'}"))
    again = json.loads((out / "metrics.json").read_text())
    assert set(again) == {"iteration", "bbox", "segm"} and again["iteration"] == 1
    for iou_type in ("bbox", "segm"):
        assert again[iou_type].keys() == saved[iou_type].keys()
        for key, value in saved[iou_type].items():
            assert again[iou_type][key] == (None if value is None else pytest.approx(value, abs=1e-9)), (iou_type, key)


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
