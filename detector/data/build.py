"""From the `dataset`, `aug` and `dataloader` config nodes to datasets (the one config path).

Formats: `coco` (dataset.train/test.images + .annotations; `generate: shapes` writes the
generated dataset first) and `voc` (dataset.root + train_split/test_split).
"""
from __future__ import annotations

import functools
import json
import os
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from detector.data.coco_index import (ANNOTATION_IGNORED, BAD_IMAGE, FATAL, DatasetError, DatasetIndex,
                                      check_coco_structure, index_coco)

if TYPE_CHECKING:   # the dataset module (torch, albumentations) is imported when first built
    from detector.data.dataset import DetectionDataset

SPLITS = ("train", "test")
# Beyond this many, dataset problems are summarised in one line instead of one warning each.
MAX_WARNINGS = 20

COCO2017_HINT = (
    "COCO 2017 is expected as datasets/coco/{train2017,val2017,annotations} (see datasets/README.md): "
    "download train2017.zip, val2017.zip and annotations_trainval2017.zip from https://cocodataset.org/#download "
    "and unzip them into datasets/coco/, or point dataset.root at an existing copy"
)


def class_names(cfg: DictConfig) -> list[str]:
    """Class names in label order (label i <-> names[i - 1]) without building a dataset."""
    data = cfg.dataset
    if data.get("classes") is not None:
        return [str(c) for c in data.classes]
    if data.format == "voc":
        from detector.data.voc import discover_classes

        return discover_classes(_voc_root(data))
    _maybe_generate(data)
    annotations = _coco_paths(cfg, "train")[1]
    coco = load_json(annotations)
    check_coco_structure(coco, annotations)
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    return [str(c.get("name", c["id"])) for c in categories]


def build_index(cfg: DictConfig, split: str) -> DatasetIndex:
    """Checked records + evaluation GT for a split, whatever the format."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data = cfg.dataset
    classes = None if data.get("classes") is None else [str(c) for c in data.classes]
    if data.format == "voc":
        from detector.data.voc import index_voc

        root = _voc_root(data)
        split_name = data.train_split if split == "train" else data.test_split
        return index_voc(root, split_name, classes, bool(data.use_difficult))
    if data.format != "coco":
        raise DatasetError(f"dataset.format={data.format!r}: expected 'coco' or 'voc'")
    _maybe_generate(data)
    images, annotations = _coco_paths(cfg, split)
    return index_coco(load_json(annotations), images, annotations, classes)


def build_dataset(cfg: DictConfig, split: str) -> DetectionDataset:
    """The `split` ("train" | "test") dataset; training applies conf/aug and dataset.filter_empty."""
    from detector.data.dataset import DetectionDataset
    from detector.data.transforms import build_train_transform

    data = cfg.dataset
    policy = str(data.on_bad_sample)
    index = build_index(cfg, split)
    _report_problems(index, policy, f"{data.name} {split}", split == "train")
    records = index.records
    train = split == "train"
    transform = None
    if train:
        if data.get("filter_empty", True):
            # Images whose annotations are bad stay in, so that sampling them is reported.
            records = [r for r in records if len(r.boxes) or r.problem is not None]
        aug = cfg.aug.train
        transform = build_train_transform(list(aug.min_size), int(aug.max_size), float(aug.hflip_prob),
                                          bool(aug.color_jitter), float(aug.color_jitter_strength))
    gt_dict = index.gt_dict
    if train:
        # The training GT is rarely evaluated; rebuilding it on demand keeps the (for
        # COCO 2017, gigabyte-sized) annotation list out of memory and out of forked workers.
        gt_dict = functools.partial(_gt_dict, cfg, split)
    dataset = DetectionDataset(
        records, index.class_names, index.label_to_category_id, gt_dict, train=train, transform=transform,
        seed=int(cfg.seed), on_bad_sample=policy, min_box_size=float(cfg.aug.train.min_box_size),
        max_image_pixels=int(data.max_image_pixels), problems=index.problems,
    )
    _load_json_cached.cache_clear()
    return dataset


def _gt_dict(cfg: DictConfig, split: str) -> dict:
    return build_index(cfg, split).gt_dict


def _report_problems(index: DatasetIndex, policy: str, what: str, train: bool) -> None:
    from detector.data.dataset import BadSampleError, BadSampleWarning

    fatal = [p for p in index.problems if p.effect == FATAL]
    if fatal:
        raise DatasetError(f"{what}: the annotations cannot be used:\n" + "\n".join(f"  {p}" for p in fatal[:MAX_WARNINGS]))
    # Under "error", an annotation that belongs to no image is refused too: the file is inconsistent.
    bad = [p for p in index.problems if p.effect in (BAD_IMAGE, ANNOTATION_IGNORED)]
    if bad and policy == "error":
        listed = "\n".join(f"  {p}" for p in bad[:MAX_WARNINGS])
        more = f"\n  ... and {len(bad) - MAX_WARNINGS} more" if len(bad) > MAX_WARNINGS else ""
        raise BadSampleError(f"{what}: {len(bad)} bad annotation(s) (dataset.on_bad_sample=error):\n{listed}{more}\n"
                             "Fix them, run tools/check_dataset.py for a full report, or set dataset.on_bad_sample=skip.")
    for problem in index.problems[:MAX_WARNINGS]:
        # Training skips such an image; evaluation keeps it, without the faulty annotation.
        consequence = "" if problem.effect != BAD_IMAGE else (
            "the image is skipped in training" if train else "the annotation is left out of evaluation")
        warnings.warn(f"{what}: {problem}" + (f"; {consequence}" if consequence else ""), BadSampleWarning, stacklevel=3)
    if len(index.problems) > MAX_WARNINGS:
        warnings.warn(f"{what}: {len(index.problems) - MAX_WARNINGS} more dataset problems not shown; "
                      "run tools/check_dataset.py for the full list", BadSampleWarning, stacklevel=3)


def _coco_paths(cfg: DictConfig, split: str) -> tuple[str, str]:
    data = cfg.dataset
    node = data.get(split)
    if node is None or OmegaConf.is_missing(node, "images") or OmegaConf.is_missing(node, "annotations"):
        raise DatasetError(f"dataset={data.name}: set dataset.{split}.images and dataset.{split}.annotations "
                         f"(e.g. dataset.{split}.images=/data/imgs dataset.{split}.annotations=/data/{split}.json)")
    images = _require_dir(data, node.images, f"dataset.{split}.images")
    annotations = str(node.annotations)
    if not os.path.isfile(annotations):
        raise FileNotFoundError(_missing_message(data, annotations, f"dataset.{split}.annotations"))
    return images, annotations


def _voc_root(data: DictConfig) -> str:
    if OmegaConf.is_missing(data, "root"):
        raise DatasetError(f"dataset={data.name}: set dataset.root to a Pascal VOC folder (with Annotations/, "
                         "JPEGImages/ and ImageSets/Main/), e.g. dataset.root=/data/VOCdevkit/VOC2007")
    return _require_dir(data, data.root, "dataset.root")


def _require_dir(data: DictConfig, path: str, key: str) -> str:
    if not os.path.isdir(str(path)):
        raise FileNotFoundError(_missing_message(data, str(path), key))
    return str(path)


def _missing_message(data: DictConfig, path: str, key: str) -> str:
    message = f"dataset={data.name}: {key} = {path} does not exist."
    if data.name == "coco2017":
        return f"{message} {COCO2017_HINT}."
    if data.format == "voc":
        return f"{message} Expected a Pascal VOC folder with Annotations/, JPEGImages/ and ImageSets/Main/ (see datasets/README.md)."
    return f"{message} Point {key} at the data (see datasets/README.md)."


def _maybe_generate(data: DictConfig) -> None:
    if data.get("generate") == "shapes":
        from detector.data.shapes import ensure_shapes_dataset

        ensure_shapes_dataset(data)


def load_json(path: str) -> dict:
    """Parsed JSON, cached until a dataset is built (class_names and build_dataset both read it).

    The result is shared: callers must not modify it.
    """
    stat = os.stat(path)
    return _load_json_cached(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=2)
def _load_json_cached(path: str, _mtime: int, _size: int) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
