"""The Pascal VOC dataset format (`dataset=voc`, `dataset=bccd`); reading the XML files is
detector/data/voc_xml.py (its names are importable from here too, as tools/voc2coco.py does)."""
from __future__ import annotations

import os

from detector.data.coco_index import DatasetError
from detector.data.formats import UNSET, DatasetFormat, check_split
from detector.data.voc_xml import (discover_classes, index_voc, split_ids, voc_split_to_coco_json,  # noqa: F401
                                   voc_to_coco)


class VocFormat(DatasetFormat):
    """A Pascal VOC folder `root` (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt);
    `train_split`/`test_split` name the split files. Without `classes`, the classes are every
    object name in the XML files, sorted. use_difficult: train and evaluate difficult objects
    too (else they are crowd regions: not trained, ignored in evaluation)."""

    missing_hint = "Expected a Pascal VOC folder with Annotations/, JPEGImages/ and ImageSets/Main/ (see datasets/README.md)."

    def __init__(self, *, root: str, train_split: str, test_split: str, use_difficult: bool, path: str | None = None,
                 test_fraction: float | None = None, split_seed: int | None = None, test_images=None, **common):
        super().__init__(**common)
        self.root = root
        self.split_names = {"train": str(train_split), "test": str(test_split)}
        self.use_difficult = bool(use_difficult)
        self.path = None if path in (None, UNSET) else str(path)
        self.folder_keys = {"test_fraction": test_fraction, "split_seed": split_seed, "test_images": test_images}
        self.common = common

    def folder_format(self):
        """The reading of dataset=auto restricted to VOC (detector/data/folder_format.py), for
        dataset.path or a root without ImageSets/Main/ (an export without split files); None for
        a standard VOC root."""
        from detector.data.folder_format import FolderFormat

        path = self.path
        if path is None and self.root not in (None, UNSET) and os.path.isdir(str(self.root)) \
                and not os.path.isdir(os.path.join(str(self.root), "ImageSets", "Main")):
            path = str(self.root)
        if path is None:
            return None
        unset = [k for k in ("test_fraction", "split_seed") if self.folder_keys[k] is None]
        if unset:
            raise DatasetError(f"dataset={self.name}: {path} has no ImageSets/Main/ split files, and a test split "
                               f"carved from it needs dataset.{unset[0]} (conf/dataset_splits/folder.yaml has them; add it to "
                               "the defaults list of your dataset config)")
        return FolderFormat(path=path, layout="voc", use_difficult=self.use_difficult, **self.folder_keys,
                            **self.common)

    def folder(self) -> str:
        if self.root is None or self.root == UNSET:
            raise DatasetError(f"dataset={self.name}: set dataset.root to a Pascal VOC folder (with Annotations/, "
                               "JPEGImages/ and ImageSets/Main/), e.g. dataset.root=/data/VOCdevkit/VOC2007")
        return self.require_path("dataset.root", self.root, folder=True)

    def index(self, split: str):
        check_split(split)
        folder_format = self.folder_format()
        if folder_format is not None:
            return folder_format.index(split)
        return index_voc(self.folder(), self.split_names[split], self.classes, self.use_difficult)

    def class_names(self) -> list[str]:
        folder_format = self.folder_format()
        if folder_format is not None:
            return folder_format.class_names()
        return list(self.classes) if self.classes is not None else discover_classes(self.folder())

    def has_masks(self) -> bool:
        # VOC's XML files hold boxes only (its SegmentationObject PNGs cover a small subset
        # and are not read), so a mask model cannot train on it.
        return False

    def check(self, splits) -> None:
        if self.path is not None:
            self.check_exists("dataset.path", self.path)
            return
        self.check_exists("dataset.root", self.root)
