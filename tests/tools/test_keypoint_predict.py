"""Predicting with a keypoint model: predictions.json and the COCO results carry each detection's
keypoints and their scores, and the pictures draw the keypoints with the skeleton the checkpoint
records (detector/utils/draw.py's draw_keypoints)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf

from detector.utils.draw import draw_keypoints, label_colour


def test_predict_writes_and_draws_keypoints(tmp_path):
    from detector.config import load_config
    from detector.modeling.build import build_model
    from detector.tasks.prediction import predict_images
    from detector.weights.checkpoint_io import save_checkpoint

    cfg = load_config(["model=keypoint_rcnn_fpn", "model.num_classes=1", "model.class_names=[thing]",
                       "model.fpn.out_channels=32", "model.roi_heads.fc_dim=32", "model.input.min_size_test=96",
                       "model.input.max_size_test=128", "model.roi_heads.keypoint_head.conv_dim=16",
                       "model.roi_heads.keypoint_head.num_convs=1", "model.roi_heads.keypoint_head.num_keypoints=3",
                       "model.roi_heads.keypoint_head.keypoint_names=[a,b,c]",
                       "model.roi_heads.keypoint_head.skeleton=[[1,2],[2,3]]"])
    torch.manual_seed(0)
    save_checkpoint({"model": build_model(cfg).state_dict(), "iteration": 0,
                     "config": OmegaConf.to_container(cfg, resolve=True)}, tmp_path / "model.pth")
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    predictions = predict_images(tmp_path / "model.pth", [tmp_path / "a.png"], tmp_path / "out", score_thresh=0.0)
    assert predictions and all(len(p["keypoints"]) == 9 and len(p["keypoint_scores"]) == 3 for p in predictions)
    results = json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
    assert [r["keypoints"] for r in results] == [p["keypoints"] for p in predictions]
    assert all(set(r["keypoints"][2::3]) == {1.0} for r in results)   # torchvision's v: 1


def test_draw_keypoints_draws_dots_and_skeleton_lines():
    image = np.zeros((60, 80, 3), np.uint8)
    keypoints = np.array([[[10, 10, 1], [50, 10, 1], [50, 40, 0]]], np.float32)
    drawn = draw_keypoints(image, keypoints, ["thing"], skeleton=[(1, 2), (2, 3)])
    colour = np.array(label_colour("thing"))
    # On the (anti-aliased) line from keypoint 1 to 2: the class's colour, give or take the smoothing.
    assert np.abs(drawn[10, 30].astype(int) - colour).max() < 60
    assert (drawn[25, 50] == 0).all()                            # to keypoint 3 (v=0): no line
    assert (drawn[40, 50] == 0).all() and (drawn[10, 50] != 0).any()   # its dot is not drawn, 2's is
    # A low score hides a keypoint (and its lines) like v=0.
    hidden = draw_keypoints(image, keypoints, ["thing"], skeleton=[(1, 2)], scores=np.array([[1.0, -3.0, 1.0]]),
                            score_thresh=0.0)
    assert (hidden[10, 30] == 0).all()
