"""Prediction on a folder: batches equal batch 1, the COCO results file, --device auto."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from detector.tasks.prediction import (COCO_IMAGES_NAME, COCO_RESULTS_NAME, padded_input_size, plan_batches,
                                        predict_images, resolve_device)

SIZE = ["model.input.min_size_test=96", "model.input.max_size_test=160"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from detector.weights.checkpoint_io import save_checkpoint
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config(["model.num_classes=2", "model.class_names=[cat,dog]", "model.fpn.out_channels=64",
                       "model.roi_heads.fc_dim=64", *SIZE])
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    save_checkpoint({"model": build_model(cfg).state_dict(), "iteration": 0,
                     "config": OmegaConf.to_container(cfg, resolve=True), "category_ids": [17, 18]}, path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six pictures of four sizes; 100x130 and 96x128 are resized and padded to one canvas."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    sizes = [(96, 128), (120, 90), (96, 128), (100, 130), (70, 140), (96, 128)]
    for i, (h, w) in enumerate(sizes):
        picture = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(3):  # a few rectangles, so features are not flat
            x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            picture[y:y + 20, x:x + 20] = rng.integers(0, 255, 3)
        cv2.imwrite(str(folder / f"{i:012d}.png"), picture[:, :, ::-1])
    return folder


@pytest.mark.parametrize("min_size, max_size", [(96, 160), (800, 1333)])
def test_padded_input_size_is_the_canvas_the_model_builds(min_size, max_size):
    from detector.modeling.preprocessing import ImagePreprocessor

    preprocessor = ImagePreprocessor([0.5] * 3, [0.25] * 3, min_size_test=min_size, max_size_test=max_size).eval()
    for h, w in [(96, 128), (100, 130), (70, 140), (427, 640), (640, 480), (33, 1000), (500, 375), (612, 612)]:
        canvas = preprocessor([torch.zeros(3, h, w)]).padded_size
        assert padded_input_size(preprocessor, h, w) == canvas, (h, w)


def test_plan_batches_fills_batches_per_canvas_and_keeps_unknown_sizes_alone():
    sizes = [(96, 128), (120, 90), None, (100, 130), (96, 128), (96, 128)]

    class Preprocessor:
        min_size_test, max_size_test, size_divisibility = 96, 160, 32

    plan = plan_batches(sizes, 2, Preprocessor())
    assert sorted(i for batch in plan for i in batch) == list(range(6))  # every image once
    assert [0, 3] in plan and [4, 5] in plan  # 100x130 shares 96x128's 96x128 canvas
    assert [2] in plan and [1] in plan
    # Without a preprocessor (TTA rescales each view), only equal input sizes share a batch.
    assert plan_batches(sizes, 3, None) == [[0, 4, 5], [1], [2], [3]]


def read_outputs(folder: Path) -> tuple[list, list, dict]:
    return (json.loads((folder / "predictions.json").read_text()), json.loads((folder / COCO_RESULTS_NAME).read_text()),
            json.loads((folder / COCO_IMAGES_NAME).read_text()))


def test_batch_of_four_equals_batch_one(checkpoint, photos, tmp_path):
    images = sorted(photos.iterdir())
    one = predict_images(checkpoint, images, tmp_path / "b1", score_thresh=0.0, device="cpu", batch_size=1)
    four = predict_images(checkpoint, images, tmp_path / "b4", score_thresh=0.0, device="cpu", batch_size=4)
    assert len(one) > 20 and len(one) == len(four)
    for a, b in zip(one, four):  # same order (the input order), same detections
        assert (a["file_name"], a["category_id"], a["category_name"]) == (b["file_name"], b["category_id"],
                                                                          b["category_name"])
        assert np.allclose(a["bbox"], b["bbox"], atol=1e-2), (a, b)
        assert abs(a["score"] - b["score"]) < 1e-4
    assert read_outputs(tmp_path / "b1")[2] == read_outputs(tmp_path / "b4")[2]
    for name in images:
        assert cv2.imread(str(tmp_path / "b4" / f"{name.stem}.png")).shape == cv2.imread(str(name)).shape


def test_coco_results_file_of_the_folder(checkpoint, photos, tmp_path):
    images = sorted(photos.iterdir())[:3]
    predictions = predict_images(checkpoint, images, tmp_path, score_thresh=0.05, batch_size=2, device="auto")
    saved, results, listing = read_outputs(tmp_path)
    assert saved == predictions  # predictions.json unchanged in shape and content
    # Numbered file names (COCO's own) become the image ids, so the results evaluate against COCO's ground truth.
    assert listing["images"] == [{"id": i, "file_name": p.name, "height": h, "width": w}
                                 for i, p, (h, w) in zip(range(3), images, [(96, 128), (120, 90), (96, 128)])]
    assert listing["categories"] == [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}]
    assert len(results) == len(predictions) > 0
    by_name = {p.name: i for i, p in enumerate(images)}
    for p, r in zip(predictions, results):
        assert set(r) == {"image_id", "category_id", "bbox", "score"}
        assert r["image_id"] == by_name[p["file_name"]] and r["category_id"] == p["category_id"]
        assert np.allclose(r["bbox"], p["bbox"], atol=1e-3) and abs(r["score"] - p["score"]) < 1e-5


def test_other_file_names_number_images_in_listing_order(checkpoint, photos, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, source in zip(["b_street.png", "a_beach.png"], sorted(photos.iterdir())):
        (folder / name).write_bytes(source.read_bytes())
    from detector.tasks.prediction import list_images

    predict_images(checkpoint, list_images(folder), tmp_path / "out", score_thresh=0.0)
    listing = read_outputs(tmp_path / "out")[2]
    assert [(i["id"], i["file_name"]) for i in listing["images"]] == [(1, "a_beach.png"), (2, "b_street.png")]


def test_device_choice():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
