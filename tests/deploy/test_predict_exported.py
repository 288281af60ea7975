"""detector-predict --weights FILE with each exported file: the same detections as with its
checkpoint (class names and category ids read from the file), in predictions.json."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import cv2
    import numpy as np

    folder = tmp_path_factory.mktemp("photos")
    generator = np.random.default_rng(0)
    for name, size in (("a.png", (130, 170)), ("b.png", (150, 110))):
        cv2.imwrite(str(folder / name), generator.integers(0, 255, (*size, 3), dtype=np.uint8))
    return folder


def predictions(weights, photos, out):
    from detector.cli.predict import main

    assert main(["--weights", str(weights), "--input", str(photos), "--output", str(out), "--score-thresh", "0.2",
                 "--device", "cpu"]) == 0
    return json.loads((out / "predictions.json").read_text())


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_predict_with_an_exported_file(exported, photos, tmp_path, fmt):
    expected = predictions(exported["checkpoint"], photos, tmp_path / "pth")
    got = predictions(exported[fmt], photos, tmp_path / fmt)
    assert len(expected) >= 4 and len(got) == len(expected)
    assert {p["category_id"] for p in got} <= {3, 7, 9}
    for p in expected:
        assert any(q["file_name"] == p["file_name"] and q["category_name"] == p["category_name"]
                   and q["category_id"] == p["category_id"] and abs(q["score"] - p["score"]) <= 1e-3
                   and max(abs(a - b) for a, b in zip(q["bbox"], p["bbox"])) <= 1e-2 for q in got), p
        assert p["category_name"] in ("circle", "square", "triangle") and "segmentation" in p
