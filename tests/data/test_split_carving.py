"""A test split carved from a folder's only split (detector/data/split_carving.py,
folder_format.py): seeded by dataset.split_seed alone, stratified, recorded in
dataset.test_images (so in config.yaml) and taken back by a resume or an eval_only run."""
from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from detector.config import load_config
from detector.data.coco_index import DatasetError
from detector.data.formats import build_format
from detector.data.split_carving import carve_test, plan_splits

_spec = importlib.util.spec_from_file_location("folder_datasets", Path(__file__).with_name("folder_datasets.py"))
fd = importlib.util.module_from_spec(_spec)
sys.modules["folder_datasets"] = fd
_spec.loader.exec_module(fd)


def labelled(n: int, classes: int, seed: int = 0):
    """n images, each with one or two of `classes` classes; class k is in about n / (k + 1) images."""
    import random

    rng = random.Random(seed)
    images = []
    for i in range(n):
        first = min(int(rng.paretovariate(1.0)) - 1, classes - 1)
        labels = [first] + ([rng.randrange(classes)] if rng.random() < 0.3 else [])
        images.append((f"img_{i:04d}.jpg", labels))
    return images


def test_the_carve_is_seeded_sized_and_stratified():
    images = labelled(300, 12) + [("background.jpg", [])]
    test = carve_test(images, 0.2, seed=0)
    assert test == carve_test(list(reversed(images)), 0.2, seed=0)   # the input order does not matter
    assert test != carve_test(images, 0.2, seed=1)
    assert abs(len(test) - 0.2 * len(images)) <= 3
    counts = Counter(c for _, labels in images for c in set(labels))
    in_test = Counter(c for name, labels in images if name in set(test) for c in set(labels))
    in_train = Counter(c for name, labels in images if name not in set(test) for c in set(labels))
    for cls, count in counts.items():
        if count >= 2:
            assert in_test[cls] >= 1 and in_train[cls] >= 1, (cls, count, in_test[cls], in_train[cls])


def test_rare_classes_with_two_images_land_in_both_parts():
    # Without stratification a 20% draw leaves most two-image classes out of one part.
    images = [(f"common_{i}.jpg", [0]) for i in range(40)]
    images += [(f"rare{k}_{j}.jpg", [k]) for k in range(1, 9) for j in range(2)]
    test = set(carve_test(images, 0.2, seed=3))
    for k in range(1, 9):
        assert len({f"rare{k}_0.jpg", f"rare{k}_1.jpg"} & test) == 1, k
    # Class 9's two images are grouped under classes rarer still (one image each, so they train):
    # only the coverage repair brings class 9 into the test part.
    images += [("shared_a.jpg", [9, 10]), ("shared_b.jpg", [9, 11])]
    test = set(carve_test(images, 0.2, seed=3))
    assert len({"shared_a.jpg", "shared_b.jpg"} & test) == 1


def test_bad_fractions_and_tiny_folders_are_refused():
    with pytest.raises(DatasetError, match=r"dataset\.test_fraction=1\.5: expected a fraction between 0 and 1"):
        carve_test(labelled(10, 2), 1.5, 0)
    with pytest.raises(DatasetError, match=r"cannot be carved from 1 image"):
        carve_test([("a.jpg", [0])], 0.2, 0)
    # Two VOC files naming one image (one by its stem, one by <filename>) list it twice: named.
    with pytest.raises(DatasetError, match=r"1 image\(s\) are listed more than once .* \['images/a\.jpg'\]"):
        carve_test([("images/a.jpg", [0]), ("images/b.jpg", [1]), ("images/a.jpg", [0])], 0.2, 0)


def test_split_names_map_onto_train_and_test():
    assert (plan_splits(["train", "valid", "test"], "d").train, plan_splits(["train", "valid", "test"], "d").test) \
        == ("train", "test")
    plan = plan_splits(["train", "val"], "d")
    assert (plan.train, plan.test) == ("train", "val") and "its 'val' split is the test split" in plan.notes[0]
    plan = plan_splits(["test", "train", "trainval", "val"], "d")
    assert (plan.train, plan.test) == ("trainval", "test")
    plan = plan_splits(["all"], "d")
    assert (plan.train, plan.test) == ("all", None)


@pytest.fixture
def yolo_one_split(tmp_path):
    images = fd.sample_images(20)
    root = tmp_path / "my_photos"
    fd.write_yolo_split(root / "images", root / "labels", images)
    (root / "data.yaml").write_text("train: images\nnames: [cat, dog, bird]\n")
    return root, images


def test_the_carve_is_recorded_and_unchanged_by_the_training_seed(yolo_one_split):
    root, images = yolo_one_split
    cfg = load_config(["dataset=auto", f"dataset.path={root}"])
    recorded = list(cfg.dataset.test_images)
    assert len(recorded) == 4 and all(n.startswith("images/") for n in recorded)
    fmt = build_format(cfg)
    test = fmt.index("test")
    assert sorted(os.path.relpath(r.path, root) for r in test.records) == recorded
    assert len(fmt.index("train").records) == 16
    # What config.yaml writes (resolve=True) is that list.
    assert OmegaConf.to_container(cfg, resolve=True)["dataset"]["test_images"] == recorded
    assert list(load_config(["dataset=auto", f"dataset.path={root}", "seed=7"]).dataset.test_images) == recorded
    assert list(load_config(["dataset=auto", f"dataset.path={root}", "dataset.split_seed=5"]).dataset.test_images) \
        != recorded


def test_a_resume_keeps_the_recorded_test_images_when_the_folder_gains_images(yolo_one_split, tmp_path):
    root, images = yolo_one_split
    out = tmp_path / "run"
    first = load_config(["dataset=auto", f"dataset.path={root}", f"output_dir={out}"])
    out.mkdir()
    OmegaConf.save(first, out / "config.yaml", resolve=True)   # what the first run wrote
    recorded = list(first.dataset.test_images)
    # New images arrive; a fresh carve of the folder now differs.
    more = [fd.Img(f"new_{i}.jpg", (64, 48), [("dog", 3, 4, 30, 40)]) for i in range(10)]
    fd.write_yolo_split(root / "images", root / "labels", more)
    assert list(load_config(["dataset=auto", f"dataset.path={root}"]).dataset.test_images) != recorded
    for again in (["train.resume=true"], ["eval_only=true"]):
        cfg = load_config(["dataset=auto", f"dataset.path={root}", f"output_dir={out}", *again])
        assert list(cfg.dataset.test_images) == recorded, again
        assert sorted(os.path.relpath(r.path, root) for r in build_format(cfg).index("test").records) == recorded
    # eval_only of a checkpoint of that run, written elsewhere: its run folder's record.
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "model_final.pth").write_bytes(b"")
    cfg = load_config(["dataset=auto", f"dataset.path={root}", f"output_dir={tmp_path / 'elsewhere'}",
                       "eval_only=true", f"model.weights={out / 'checkpoints' / 'model_final.pth'}"])
    assert list(cfg.dataset.test_images) == recorded
    # A recorded test image that the folder lost is named.
    os.remove(root / recorded[0])
    cfg = load_config(["dataset=auto", f"dataset.path={root}", f"output_dir={out}", "train.resume=true"])
    with pytest.raises(DatasetError, match=r"dataset\.test_images names 1 image\(s\) not in dataset\.path"):
        build_format(cfg).index("test")
