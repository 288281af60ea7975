"""Every image of a dataset in one COCO dict, train and test pooled, whatever its layout.

The label-error search looks at all the images the user labelled, so the two splits are read
through the dataset's own format (the same checks and class order as training) and written as
one COCO file, `annotations.json` in the output folder. The folds' trainings read it back
(fold_format.py), the scoring compares predictions with it, and --write-fixed edits a copy.

Each image keeps its path (file_name, absolute, so the file works from any folder) and its name
as the dataset names it (`name`: relative to dataset.path or dataset.root when the image is
under it, else to the images' common folder). Annotations keep their ids when those are unique
numbers across both splits (a COCO export), else they are numbered in file order (VOC and YOLO
files have no ids). Images the loader refuses (bad samples) are left out and listed with the
loader's other findings (dropped zero-area boxes, ...) under info.loader_problems.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

POOLED_FILE = "annotations.json"


def dataset_folder(dataset_cfg: DictConfig) -> str | None:
    """The dataset's own folder (dataset.path, else dataset.root) when it is set and exists."""
    for key in ("path", "root"):
        value = OmegaConf.select(dataset_cfg, key, default=None)
        if value not in (None, "", "???") and os.path.isdir(str(value)):
            return os.path.abspath(str(value))
    return None


def image_names(paths: list[str], folder: str | None) -> dict[str, str]:
    """Each path's name as the dataset names it (see the module docstring)."""
    paths = [os.path.abspath(p) for p in paths]
    if not paths:
        return {}
    base = folder
    if base is None or not all(os.path.commonpath([base, p]) == base for p in paths):
        base = os.path.commonpath([os.path.dirname(p) for p in paths])
    return {p: os.path.relpath(p, base).replace(os.sep, "/") for p in paths}


def pool_indexes(indexes: dict, folder: str | None) -> dict:
    """The pooled COCO dict of {split: DatasetIndex} (see the module docstring)."""
    class_names = None
    images, annotations, problems = [], [], []
    ids_are_unique, seen_ids = True, set()
    category_of: dict[str, int] = {}
    category_names: dict[str, dict[int, str]] = {}   # per split: its category id -> class name
    usable = []
    for split, index in indexes.items():
        if class_names is None:
            class_names = list(index.class_names)
            names_by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in index.gt_dict["categories"]}
            category_of = {names_by_id[cid]: int(cid) for cid in index.label_to_category_id.values()}
        elif list(index.class_names) != class_names:
            raise ValueError(f"the {split} split names classes {index.class_names}, the first split {class_names}")
        problems.extend(f"{split}: {p}" for p in index.problems)
        records = {r.image_id: r for r in index.records}
        category_names[split] = {int(c["id"]): str(c.get("name", c["id"])) for c in index.gt_dict["categories"]}
        for entry in index.gt_dict["images"]:
            record = records.get(entry["id"])
            if record is None or record.problem:
                continue
            usable.append((split, entry, record))
        for ann in index.gt_dict["annotations"]:
            ann_id = ann.get("id")
            if not isinstance(ann_id, int) or isinstance(ann_id, bool) or ann_id in seen_ids:
                ids_are_unique = False
            seen_ids.add(ann_id)
    names = image_names([record.path for _, _, record in usable], folder)
    new_image_id = {}
    for split, entry, record in usable:
        image_id = len(images) + 1
        new_image_id[(split, entry["id"])] = image_id
        path = os.path.abspath(record.path)
        images.append({"id": image_id, "file_name": path, "name": names[path], "split": split,
                       "width": int(record.width), "height": int(record.height)})
    for split, index in indexes.items():
        for ann in index.gt_dict["annotations"]:
            image_id = new_image_id.get((split, ann["image_id"]))
            if image_id is None:
                continue
            ann = {k: v for k, v in ann.items() if k not in ("id", "image_id", "category_id")} | {
                "id": ann["id"] if ids_are_unique else len(annotations) + 1, "image_id": image_id,
                "category_id": category_of[category_names[split][int(ann["category_id"])]]}
            annotations.append(ann)
    categories = [{"id": category_of[name], "name": name} for name in class_names]
    info = {"description": "every image of the dataset, train and test pooled (detector-find-label-errors)",
            "images_folder": folder, "annotation_ids": "as in the dataset" if ids_are_unique else "numbered in file order",
            "loader_problems": problems}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def build_pooled(cfg: DictConfig) -> dict:
    """The pooled COCO dict of the dataset `cfg` configures (both splits, read by its format)."""
    from detector.data.formats import build_format

    fmt = build_format(cfg)
    indexes = {split: fmt.index(split) for split in ("train", "test")}
    return pool_indexes(indexes, dataset_folder(cfg.dataset))


def write_pooled(coco: dict, output_dir: str | Path) -> Path:
    path = Path(output_dir) / POOLED_FILE
    path.write_text(json.dumps(coco))
    return path


def read_pooled(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
