"""model=keypoint_rcnn_fpn trains on the generated shapes (their four keypoints) and its run
writes the keypoint metrics everywhere the box metrics go: metrics.json's "keypoints" block,
metrics.jsonl, results.csv, the best checkpoint by keypoints/AP, and COCO keypoint results."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from detector.config import load_config
from detector.engine.run import train
from detector.tasks.detection import DetectionTask
from detector.weights.loading import load_model

KEYPOINT_STATS = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]


def tiny(root, output_dir, *extra):
    """Four 96 px training images and a narrow ResNet-18 keypoint model: seconds per iteration."""
    return [f"output_dir={output_dir}", f"dataset.root={root}", "dataset.num_train=4", "dataset.num_test=2",
            "dataset.image_size=96", "dataset.object_size=[16,40]", "model=keypoint_rcnn_fpn",
            "backbone=resnet18", "model.input.min_size_test=96", "model.input.max_size_test=96", "aug.min_size=[96]",
            "aug.max_size=96", "model.roi_heads.fc_dim=32", "model.fpn.out_channels=32",
            "model.rpn.post_nms_topk_test=50", "model.roi_heads.keypoint_head.conv_dim=16",
            "model.roi_heads.keypoint_head.num_convs=2", "train.device=cpu", "train.amp=none",
            "train.vis_period_images=0", "test.analysis=off", "dataloader.num_workers=0", "dataloader.batch_size=2",
            *extra]


@pytest.fixture(scope="module")
def keypoint_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("keypoint_run")
    out = root / "run"
    torch.manual_seed(0)
    train(load_config(tiny(root / "shapes", out, "train.max_iter=1", "train.checkpoint_period=1",
                           "train.best_metric=keypoints/AP")), DetectionTask())
    return out


def test_the_run_writes_keypoint_metrics_next_to_the_box_ones(keypoint_run):
    metrics = json.loads((keypoint_run / "metrics.json").read_text())
    assert set(metrics) == {"iteration", "bbox", "keypoints"}
    assert set(metrics["keypoints"]) == set(KEYPOINT_STATS) | {"per_category"}
    assert set(metrics["keypoints"]["per_category"]) <= {"circle", "rectangle", "triangle", "cross", "star"}
    assert metrics["keypoints"]["per_category"].keys() == metrics["bbox"]["per_category"].keys()
    rows = list(csv.DictReader((keypoint_run / "results.csv").open()))
    assert {f"keypoints/{name}" for name in KEYPOINT_STATS} <= set(rows[-1])
    evaluations = [json.loads(line) for line in (keypoint_run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [e for e in evaluations if "keypoints" in e]
    assert evaluations and set(KEYPOINT_STATS) <= set(evaluations[-1]["keypoints"])
    # train.best_metric=keypoints/AP chose a checkpoint.
    assert (keypoint_run / "checkpoints" / "model_best.pth").is_file()
    results = json.loads((keypoint_run / "inference" / "coco_instances_results.json").read_text())
    assert results and len(results[0]["keypoints"]) == 12 and len(results[0]["keypoint_scores"]) == 4


def test_the_checkpoint_predicts_the_datasets_four_keypoints(keypoint_run):
    model = load_model(keypoint_run / "checkpoints" / "model_final.pth", overrides=["model.roi_heads.score_thresh=0.0"])
    assert model.config.model.roi_heads.keypoint_head.num_keypoints == 4
    with torch.no_grad():
        output = model([torch.rand(3, 80, 120)])[0]
    count = len(output["boxes"])
    assert count > 0 and output["keypoints"].shape == (count, 4, 3) and output["keypoints_scores"].shape == (count, 4)
    # In the input image's pixels (80 x 120), each inside its own box.
    boxes, points = output["boxes"], output["keypoints"]
    assert bool(((points[..., 0] >= boxes[:, None, 0] - 1e-3) & (points[..., 0] <= boxes[:, None, 2] + 1e-3)).all())
    assert bool((points[..., 2] == 1).all())


def test_the_validation_loss_of_a_keypoint_model_includes_its_keypoint_loss(keypoint_run):
    from detector.tasks.validation_loss import build_validation_set, compute_validation_loss

    root = keypoint_run.parent
    cfg = load_config(tiny(root / "shapes", root / "unused", "test.val_loss_max_images=2"))
    DetectionTask().resolve_classes(cfg)
    model = load_model(keypoint_run / "checkpoints" / "model_final.pth")
    losses = compute_validation_loss(model, build_validation_set(cfg), torch.device("cpu"))
    assert losses["loss_keypoint"] > 0 and "total_loss" in losses
