"""The generated shapes dataset: deterministic, complete, and what its JSON says."""
import json
import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image

from detector.data import build_dataset, class_names
from detector.data.shapes import ensure_shapes_dataset, generator_params, render_image


def test_counts_and_classes_match_the_files(shapes_cfg, shapes_root):
    cfg = shapes_cfg()
    assert class_names(cfg) == ["circle", "rectangle", "triangle", "cross", "star"]
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    for split, dataset, count in (("train", train, 24), ("test", test, 8)):
        data = json.loads((shapes_root / "annotations" / f"{split}.json").read_text())
        assert len(data["images"]) == count == len(dataset) == len(os.listdir(shapes_root / split))
        assert [c["name"] for c in data["categories"]] == dataset.class_names
        assert sum(len(r.boxes) for r in dataset.records) == len(data["annotations"])
        assert len(dataset.coco_gt().getAnnIds()) == len(data["annotations"])
        for record in dataset.records:
            assert 3 <= len(record.boxes) <= 8
            sides = np.maximum(record.boxes[:, 2] - record.boxes[:, 0], record.boxes[:, 3] - record.boxes[:, 1])
            assert sides.min() >= 15.9 and sides.max() <= 320 / 3 + 0.1
            assert Image.open(record.path).size == (320, 320) == (record.width, record.height)
    assert not train.problems and not test.problems


def test_generation_is_deterministic_and_seeded(shapes_cfg):
    params = generator_params(shapes_cfg().dataset)
    a_image, a_objects = render_image(np.random.default_rng([0, 0, 5]), params)
    b_image, b_objects = render_image(np.random.default_rng([0, 0, 5]), params)
    assert np.array_equal(a_image, b_image) and a_objects == b_objects
    c_image, _ = render_image(np.random.default_rng([1, 0, 5]), params)
    assert not np.array_equal(a_image, c_image)


def _generate(args):
    root, seed = args
    from detector.config import load_config

    cfg = load_config([f"dataset.root={root}", "dataset.num_train=40", "dataset.num_test=4", f"dataset.seed={seed}"])
    ensure_shapes_dataset(cfg.dataset)
    return (root / "annotations" / "train.json").read_bytes()


def test_concurrent_generation_is_atomic_and_a_config_change_regenerates(tmp_path):
    root = tmp_path / "shapes"
    # Two "ranks" racing: both end with the same complete dataset and no temp folders left.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        first, second = pool.map(_generate, [(root, 0), (root, 0)])
    assert first == second
    assert sorted(os.listdir(tmp_path)) == ["shapes", "shapes.lock"]
    assert len(os.listdir(root / "train")) == 40
    assert _generate((root, 1)) != first  # another seed rewrites the cache
    assert sorted(os.listdir(tmp_path)) == ["shapes", "shapes.lock"]


def test_impossible_sizes_are_refused_with_the_key_to_change(shapes_cfg):
    cfg = shapes_cfg()
    cfg.dataset.object_size = [16, 400]           # larger than the 320 px image
    with pytest.raises(ValueError, match=r"dataset.object_size=\[16.0, 400.0\].*dataset.image_size"):
        generator_params(cfg.dataset)
    cfg = shapes_cfg()
    cfg.dataset.objects_per_image = [5, 2]
    with pytest.raises(ValueError, match=r"dataset.objects_per_image=\[5, 2\]"):
        generator_params(cfg.dataset)
