"""A user's own dataset format: a CSV of boxes, one row per box, `image,x1,y1,x2,y2,class`
(pixels, corners), with an optional header row; an image without boxes is a row holding only
its file name. Image paths are relative to the `images` folder; `train` and `test` name one
CSV file per split.

All a format has to do is read its files into boxes per image: DatasetFormat.index_boxes
applies the project's checks (NaN, negative or outside boxes make a bad sample, zero-area
boxes are dropped), numbers the classes and writes the evaluation ground truth."""
from __future__ import annotations

import csv
import os

from detector.data.formats import DatasetFormat, ImageBoxes

HEADER = ["image", "x1", "y1", "x2", "y2", "class"]


class CsvBoxes(DatasetFormat):
    def __init__(self, *, images: str, train: str, test: str, **common):
        super().__init__(**common)   # name, classes, filter_empty, on_bad_sample, max_image_pixels
        self.images = images
        self.files = {"train": train, "test": test}

    def check(self, splits) -> None:
        """Before any work: the paths are set and exist (each error names its key)."""
        self.check_exists("dataset.images", self.images)
        for split in splits:
            self.check_exists(f"dataset.{split}", self.files[split])

    def index(self, split: str):
        images = self.require_path("dataset.images", self.images, folder=True)
        path = self.require_path(f"dataset.{split}", self.files[split], folder=False)
        by_image: dict[str, ImageBoxes] = {}
        with open(path, newline="") as handle:
            for row in csv.reader(handle):
                if not row or row == HEADER:
                    continue
                entry = by_image.setdefault(row[0], ImageBoxes(os.path.join(images, row[0])))
                if len(row) == 6:
                    entry.boxes.append([float(v) for v in row[1:5]])
                    entry.classes.append(row[5])
        return self.index_boxes(by_image.values(), source=path)
