"""--rescore on an earlier run's folder (no training): the suspects again from the folds'
predictions, and the gallery drawn under the dataset.max_image_pixels those runs read the images
with (their config.yaml), not under a default of the tool's own."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cleanlab")

from detector.label_errors.job import rescore  # noqa: E402
from detector.label_errors.pooled_dataset import write_pooled  # noqa: E402
from detector.label_errors.settings import load_settings  # noqa: E402
from tests.label_errors.test_suspects import dataset  # noqa: E402


def earlier_run(tmp_path, max_image_pixels: int):
    """An output folder as a 2-fold run leaves it: pooled labels, folds.json, each fold's predictions
    and config.yaml; the images are real 400 x 300 files."""
    coco, results = dataset()
    tmp_path.mkdir(parents=True, exist_ok=True)
    for image in coco["images"]:
        image["file_name"] = str(tmp_path / f"{image['id']}.png")
        Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(image["file_name"])
    out = tmp_path / "out"
    out.mkdir()
    write_pooled(coco, out)
    folds = [[coco["images"][0]["file_name"], coco["images"][1]["file_name"]],
             [coco["images"][2]["file_name"], coco["images"][3]["file_name"]]]
    (out / "folds.json").write_text(json.dumps({"seed": 0, "folds": folds}))
    for k, ids in enumerate(([1, 2], [3, 4])):
        run_dir = out / "folds" / str(k)
        (run_dir / "inference").mkdir(parents=True)
        (run_dir / "inference" / "coco_instances_results.json").write_text(
            json.dumps([r for r in results if r["image_id"] in ids]))
        (run_dir / "config.yaml").write_text(f"dataset:\n  max_image_pixels: {max_image_pixels}\n")
    return out


def test_rescore_ranks_the_earlier_predictions_and_draws_under_the_runs_pixel_limit(tmp_path):
    out = earlier_run(tmp_path / "large", max_image_pixels=89478485)
    result = rescore(load_settings(), out, top=5, logger=logging.getLogger("test"))
    entries = json.loads((out / "label_errors.json").read_text())
    assert {e["image"] for e in entries} == {"img2.jpg", "img4.jpg"}
    assert result.findings.suspects and len(result.gallery) == 2
    assert sorted((out / "gallery").iterdir())

    # The runs read their images under a 10000-pixel limit: a 400 x 300 image is refused, not drawn.
    small = earlier_run(tmp_path / "small", max_image_pixels=10000)
    result = rescore(load_settings(), small, top=5, logger=logging.getLogger("test"))
    assert result.findings.suspects and result.gallery == []


def test_rescore_without_the_runs_config_names_the_missing_file(tmp_path):
    out = earlier_run(tmp_path, max_image_pixels=89478485)
    (out / "folds" / "0" / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"folds/0/config.yaml is missing"):
        rescore(load_settings(), out, top=5, logger=logging.getLogger("test"))
