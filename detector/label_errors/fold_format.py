"""One fold of the label-error search as a dataset format: train on the other folds, test on it.

Each fold's model trains through the project's normal training command, with the user's own
overrides (dataset group, schedule, model, ...) and this format swapped in for the dataset's
`_target_` (detector/label_errors/fold_training.py):

    dataset._target_=detector.label_errors.fold_format.HeldOutFold
    ++dataset.pooled=OUT/annotations.json ++dataset.folds_file=OUT/folds.json ++dataset.fold=2

so the dataset's group still picks its schedule (dataset=bccd its CPU recipe) and config.yaml
records what the fold trained on. The dataset's own keys (root, path, splits, ...) arrive too
and are kept as `source` only: the pooled file (pooled_dataset.py) already holds every image
those keys describe, read through the dataset's own format. The fold's test split is the fold
itself, so the run's final evaluation is the honest prediction of those images. fold=-1 tests on
every image (--weights: one given model predicts all of them).
"""
from __future__ import annotations

import json
import os
from functools import lru_cache

from detector.data.coco_index import DatasetError, DatasetIndex, index_coco
from detector.data.formats import DatasetFormat, check_split
from detector.data.image_io import DEFAULT_MAX_IMAGE_PIXELS
from detector.data.split_carving import subset_index

ALL_IMAGES = -1


@lru_cache(maxsize=2)
def _pooled_index(pooled: str, _mtime: float) -> DatasetIndex:
    with open(pooled) as handle:
        coco = json.load(handle)
    classes = [c["name"] for c in coco["categories"]]
    return index_coco(coco, "", pooled, classes)


def read_folds(folds_file: str) -> list[list[str]]:
    """The folds' image paths (folds.json: {"folds": [[path, ...], ...], "seed": ...})."""
    with open(folds_file) as handle:
        return [list(part) for part in json.load(handle)["folds"]]


class HeldOutFold(DatasetFormat):
    """pooled: the pooled COCO file; folds_file: folds.json; fold: the held-out fold (its test
    split), or -1 for every image in both splits. **source: the dataset's own keys, unused."""

    def __init__(self, *, pooled: str, folds_file: str, fold: int, name: str, classes=None, filter_empty: bool = False,
                 on_bad_sample: str = "skip", max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, keypoint_sigmas=None,
                 keypoint_flip_map=None, **source):
        super().__init__(name=name, classes=None, filter_empty=filter_empty, on_bad_sample=on_bad_sample,
                         max_image_pixels=max_image_pixels, keypoint_sigmas=keypoint_sigmas,
                         keypoint_flip_map=keypoint_flip_map)
        self.pooled = str(pooled)
        self.folds_file = str(folds_file)
        self.fold = int(fold)
        self.source = source

    def check(self, splits) -> None:
        for key, path in (("dataset.pooled", self.pooled), ("dataset.folds_file", self.folds_file)):
            if not os.path.isfile(path):
                raise DatasetError(f"{key}={path} does not exist: it is written by detector-find-label-errors "
                                   "before the folds train")
        count = len(read_folds(self.folds_file))
        if self.fold != ALL_IMAGES and not 0 <= self.fold < count:
            raise DatasetError(f"dataset.fold={self.fold}: {self.folds_file} has folds 0..{count - 1} (or -1: all)")

    def full_index(self) -> DatasetIndex:
        return _pooled_index(self.pooled, os.path.getmtime(self.pooled))

    def class_names(self) -> list[str]:
        return list(self.full_index().class_names)

    def index(self, split: str) -> DatasetIndex:
        check_split(split)
        self.check([split])
        full = self.full_index()
        every = {r.path for r in full.records}
        if self.fold == ALL_IMAGES:
            return subset_index(full, every)
        held_out = set(read_folds(self.folds_file)[self.fold])
        return subset_index(full, held_out if split == "test" else every - held_out)
