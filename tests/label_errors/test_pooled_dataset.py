"""Every image pooled from both splits, whatever the layout: names as the dataset names them, ids
kept or numbered, refused images left out, and what the loader dropped kept for summary.md."""
from __future__ import annotations

import json

from detector.config import load_config
from detector.label_errors.pooled_dataset import build_pooled


def write_coco(folder, split, images, annotations):
    (folder / split).mkdir(parents=True, exist_ok=True)
    for image in images:
        from PIL import Image

        Image.new("RGB", (image["width"], image["height"])).save(folder / split / image["file_name"])
    path = folder / f"{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]}))
    return [f"dataset.{split}.images={folder / split}", f"dataset.{split}.annotations={path}"]


def test_two_coco_splits_pool_with_their_ids_and_names(tmp_path):
    size = {"width": 64, "height": 48}
    overrides = ["dataset=coco_format"]
    overrides += write_coco(tmp_path, "train", [{"id": 1, "file_name": "a.jpg", **size}],
                            [{"id": 100, "image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 9, "iscrowd": 0},
                             {"id": 101, "image_id": 1, "bbox": [5, 5, 0, 10], "category_id": 7, "iscrowd": 0}])
    overrides += write_coco(tmp_path, "test", [{"id": 1, "file_name": "b.jpg", **size}],
                            [{"id": 200, "image_id": 1, "bbox": [2, 2, 20, 20], "category_id": 7, "iscrowd": 0}])
    pooled = build_pooled(load_config(overrides))
    assert [(i["name"], i["split"]) for i in pooled["images"]] == [("train/a.jpg", "train"), ("test/b.jpg", "test")]
    assert [i["id"] for i in pooled["images"]] == [1, 2]                 # the two image ids 1 told apart
    assert [(a["id"], a["image_id"], a["category_id"]) for a in pooled["annotations"]] == [(100, 1, 9), (200, 2, 7)]
    assert pooled["info"]["annotation_ids"] == "as in the dataset"
    assert [c["name"] for c in pooled["categories"]] == ["cat", "dog"]
    assert len(pooled["info"]["loader_problems"]) == 1 and "zero area" in pooled["info"]["loader_problems"][0]


def test_bccd_pools_all_its_images_and_reports_its_two_zero_area_boxes(bccd):
    pooled = build_pooled(load_config(["dataset=bccd"]))
    assert len(pooled["images"]) == 364 and len(pooled["annotations"]) == 4888 - 2
    assert pooled["images"][0]["name"] == "JPEGImages/BloodImage_00000.jpg"
    # VOC files have no annotation ids and both splits number theirs from 1: numbered anew, unique.
    ids = [a["id"] for a in pooled["annotations"]]
    assert ids == list(range(1, len(ids) + 1)) and pooled["info"]["annotation_ids"] == "numbered in file order"
    problems = pooled["info"]["loader_problems"]
    assert len(problems) == 2 and all("zero area" in p for p in problems)
    assert "BloodImage_00338" in problems[0] and "BloodImage_00343" in problems[1]
