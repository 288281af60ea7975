"""COCO-format loading on coco128: real JSON with crowd regions, empty images, a grayscale JPEG."""
import json

import numpy as np
import pytest
import torch

from detector.data import build_dataset, class_names


@pytest.fixture
def coco128_json(coco128):
    with open(coco128 / "annotations" / "instances_train2017.json") as handle:
        return json.load(handle)


def test_counts_match_the_file(coco128_cfg, coco128_json):
    cfg = coco128_cfg()
    test = build_dataset(cfg, "test")
    assert len(test) == len(coco128_json["images"]) == 128
    gt = test.coco_gt()
    assert len(gt.getAnnIds()) == len(coco128_json["annotations"]) == 939
    assert len(gt.getCatIds()) == len(coco128_json["categories"]) == 80
    crowd = sum(a["iscrowd"] for a in coco128_json["annotations"])
    assert sum(len(r.boxes) for r in test.records) == 939 - crowd
    names = {c["id"]: c["name"] for c in coco128_json["categories"]}
    assert class_names(cfg) == [names[i] for i in sorted(names)]


def test_labels_are_contiguous_and_map_back_to_category_ids(coco128_cfg, coco128_json):
    dataset = build_dataset(coco128_cfg(), "test")
    ids = sorted(c["id"] for c in coco128_json["categories"])
    assert dataset.label_to_category_id == {label: cid for label, cid in enumerate(ids, start=1)}
    by_image = {}
    for ann in coco128_json["annotations"]:
        if not ann["iscrowd"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    cat_to_label = {cid: label for label, cid in dataset.label_to_category_id.items()}
    for record in dataset.records:
        anns = by_image.get(record.image_id, [])
        expected = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                             for a in anns], np.float32).reshape(-1, 4)
        np.testing.assert_allclose(record.boxes, expected, atol=1e-3)
        assert record.labels.tolist() == [cat_to_label[a["category_id"]] for a in anns]
        assert record.labels.min(initial=1) >= 1 and record.labels.max(initial=1) <= 80


def test_crowd_regions_are_not_training_targets_but_stay_in_the_gt(coco128_cfg, coco128_json):
    crowd = [a for a in coco128_json["annotations"] if a["iscrowd"]]
    assert len(crowd) == 10
    dataset = build_dataset(coco128_cfg(), "train")
    for ann in crowd:
        x, y, w, h = ann["bbox"]
        record = next(r for r in dataset.records if r.image_id == ann["image_id"])
        assert not np.any(np.all(np.abs(record.boxes - np.array([x, y, x + w, y + h])) < 1e-3, axis=1))
    gt = dataset.coco_gt()
    assert sorted(a["id"] for a in gt.loadAnns(gt.getAnnIds(iscrowd=True))) == sorted(a["id"] for a in crowd)


def test_empty_images_are_filtered_for_training_only(coco128_cfg, coco128_json):
    annotated = {a["image_id"] for a in coco128_json["annotations"] if not a["iscrowd"]}
    empty = {i["id"] for i in coco128_json["images"]} - annotated
    assert len(empty) == 2
    train_ids = {r.image_id for r in build_dataset(coco128_cfg(), "train").records}
    assert not train_ids & empty and len(train_ids) == 126
    unfiltered = {r.image_id for r in build_dataset(coco128_cfg("dataset.filter_empty=false"), "train").records}
    assert empty <= unfiltered and len(unfiltered) == 128
    assert empty <= {r.image_id for r in build_dataset(coco128_cfg(), "test").records}


def test_grayscale_image_comes_out_as_rgb(coco128_cfg):
    from PIL import Image

    dataset = build_dataset(coco128_cfg(), "test")
    gray = [i for i, r in enumerate(dataset.records) if Image.open(r.path).mode == "L"]
    assert len(gray) == 1
    sample = dataset[gray[0]]
    image = sample["image"]
    assert image.shape[0] == 3 and image.dtype == torch.float32
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    record = dataset.records[gray[0]]
    assert tuple(image.shape[1:]) == (record.height, record.width)
