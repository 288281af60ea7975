"""Dataset formats: how a dataset on disk becomes the records the detector trains on.

`cfg.dataset` names a DatasetFormat subclass in `_target_`; `build_format(cfg)` makes the
object (the one path from the dataset config to a format). The builders, the config checks
and the tools ask the object, so no code outside a format knows what its keys mean, and a
user's own format (a CSV of boxes, a database) plugs in from a module of their own.

What a format supplies, per split ("train" | "test"): a DatasetIndex (coco_index) holding
  * the checked image records (path, size, xyxy boxes, labels 1..K, bad-sample reason),
  * the class names in label order and label -> COCO category id,
  * the evaluation GT as a COCO dict (the COCO evaluator scores against it),
  * the problems found (reported or refused by build_dataset as dataset.on_bad_sample says).
A format that can describe its annotations as boxes per image gets all of that from
`index_boxes` (or as a COCO dict from coco_index.index_coco): the same checks as COCO and VOC.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from detector.data.coco_index import DatasetError, DatasetIndex, index_coco

SPLITS = ("train", "test")
ON_BAD_SAMPLE = ("skip", "error")
# What OmegaConf gives for a mandatory value (`???`) left unset.
UNSET = "???"


@dataclass
class ImageBoxes:
    """One image and its boxes, as a format reads them (for `DatasetFormat.index_boxes`).

    width/height None: read from the image header. Boxes are x1, y1, x2, y2 in pixels;
    `classes` are the boxes' class names; `crowd` marks regions evaluation ignores;
    `segmentations` (optional, for mask models): one COCO segmentation per box (polygons
    [[x1, y1, x2, y2, ...], ...] or an RLE dict), see detector/data/masks.py."""

    path: str
    boxes: list = field(default_factory=list)      # [[x1, y1, x2, y2], ...]
    classes: list = field(default_factory=list)    # one name per box
    width: int | None = None
    height: int | None = None
    crowd: Sequence[bool] = field(default_factory=list)
    segmentations: Sequence = field(default_factory=list)
    # Optional, for keypoint models: one COCO keypoint list [x, y, v] * K per box (pixels).
    keypoints: Sequence = field(default_factory=list)


class DatasetFormat:
    """Base class of dataset formats. A subclass implements `index(split)`; it may override
    `class_names()` (when the names can be found without reading a whole split) and
    `check(splits)` (quick checks run before any work starts, e.g. that paths exist).

    Keys every dataset config has (conf/dataset/*.yaml), the constructor's arguments:
      name              the dataset's name in logs and messages (passed by build_format)
      classes           class names fixing the label order, or None (the format finds them)
      filter_empty      drop images without boxes from training (kept for evaluation)
      on_bad_sample     skip | error, for unreadable images and bad annotations
      max_image_pixels  larger images are refused (decompression-bomb guard)
      keypoint_sigmas, keypoint_flip_map   a keypoint dataset's OKS sigmas and left/right pairs
                        (conf/dataset_keypoints/default.yaml; detector/data/keypoints.py)
    """

    # Added to "does not exist" messages (e.g. where to download the data).
    missing_hint = "Point {key} at the data (see datasets/README.md)."

    def __init__(self, *, name: str, classes: Sequence[str] | None, filter_empty: bool, on_bad_sample: str,
                 max_image_pixels: int, keypoint_sigmas: Sequence[float] | None = None,
                 keypoint_flip_map: Sequence[Sequence[str]] | None = None):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise DatasetError(f"dataset.on_bad_sample={on_bad_sample!r}: expected one of {ON_BAD_SAMPLE}")
        self.name = str(name)
        self.classes = None if classes is None else [str(c) for c in classes]
        self.filter_empty = bool(filter_empty)
        self.on_bad_sample = str(on_bad_sample)
        self.max_image_pixels = int(max_image_pixels)
        self.keypoint_sigmas = None if keypoint_sigmas is None else [float(v) for v in keypoint_sigmas]
        self.keypoint_flip_map = None if keypoint_flip_map is None else [[str(v) for v in p] for p in keypoint_flip_map]

    # ---- what a format implements -------------------------------------------------------
    def index(self, split: str) -> DatasetIndex:
        """The checked records, class names, label -> category ids and evaluation GT of `split`."""
        raise NotImplementedError(f"{type(self).__name__} must implement index(split)")

    def class_names(self) -> list[str]:
        """Class names in label order (label i <-> names[i - 1])."""
        if self.classes is not None:
            return list(self.classes)
        return self.index("train").class_names

    def check(self, splits: Sequence[str]) -> None:
        """Raise DatasetError (naming the key) for settings that cannot work, before any
        work starts; must be quick (no reading of annotations)."""

    def has_masks(self) -> bool:
        """Whether the training split has instance masks (COCO segmentations) for a mask model.
        The default builds the train index; formats that know cheaper (or know there are
        none, as VOC) override it."""
        return self.index("train").has_masks

    # ---- helpers for subclasses -----------------------------------------------------------
    def index_boxes(self, images: Iterable[ImageBoxes], source: str) -> DatasetIndex:
        """A DatasetIndex from boxes per image, through the checks COCO and VOC get (NaN,
        negative or outside boxes make a bad sample, zero-area boxes are dropped, ...).

        Labels follow `self.classes` when set, else the sorted class names found. `source`
        (the annotation file) is named in problems about the file itself."""
        return index_image_boxes(images, source, self.classes)

    def require(self, key: str, value, example: str = "/path/to/data") -> str:
        """`value` of config key `key` (e.g. dataset.root), or DatasetError when it is unset."""
        if value is None or value == UNSET:
            raise DatasetError(f"{key} is not set: dataset={self.name} needs it, e.g. {key}={example}.")
        return str(value)

    def check_exists(self, key: str, value) -> str:
        """For check(): `value` of `key` when it is set and the path exists, else DatasetError."""
        path = self.require(key, value)
        if not os.path.exists(path):
            raise DatasetError(f"{key}={path} does not exist. {self.hint(key)}")
        return path

    def require_path(self, key: str, value, folder: bool) -> str:
        """`value` when it is an existing folder (or file); else FileNotFoundError naming the key."""
        path = self.require(key, value)
        if not (os.path.isdir(path) if folder else os.path.isfile(path)):
            raise FileNotFoundError(self.missing_message(key, path))
        return path

    def hint(self, key: str) -> str:
        return self.missing_hint.replace("{key}", key)

    def missing_message(self, key: str, path: str) -> str:
        return f"dataset={self.name}: {key} = {path} does not exist. {self.hint(key)}"


def index_image_boxes(images: Iterable[ImageBoxes], source: str, classes: Sequence[str] | None,
                      keypoint_names: Sequence[str] | None = None, keypoint_flip_idx: Sequence[int] | None = None
                      ) -> DatasetIndex:
    """DatasetFormat.index_boxes for code that has class names but no format object (the
    folder layouts): labels follow `classes` when given, else the sorted names found.
    `keypoint_names` (and the mirror's `keypoint_flip_idx`): every category lists these keypoints,
    for the images' per-box `keypoints` (detector/data/keypoints.py)."""
    from detector.data.image_io import BadImageError, read_image_size

    images = list(images)
    names = list(classes) if classes is not None else sorted({str(c) for i in images for c in i.classes})
    category_ids = {name: k for k, name in enumerate(names, start=1)}
    coco_images, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        width, height = image.width, image.height
        if width is None or height is None:
            try:
                width, height = read_image_size(image.path)
            except BadImageError:
                width, height = 0, 0   # reported as a bad sample by the shared checks
        coco_images.append({"id": image_id, "file_name": image.path, "width": width, "height": height})
        crowd = list(image.crowd) or [False] * len(image.boxes)
        segmentations = list(image.segmentations) or [None] * len(image.boxes)
        keypoints = list(image.keypoints) or [None] * len(image.boxes)
        for box, name, is_crowd, segmentation, points in zip(image.boxes, image.classes, crowd, segmentations,
                                                              keypoints):
            x1, y1, x2, y2 = box
            bbox = [x1, y1, x2 - x1, y2 - y1] if all(isinstance(v, (int, float)) for v in box) else list(box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "bbox": bbox, "iscrowd": int(bool(is_crowd)),
                # A name outside dataset.classes is reported (and named) as an unknown category.
                "category_id": category_ids.get(str(name), f"{name!r} (not in dataset.classes {names})"),
                **({"segmentation": segmentation} if segmentation is not None else {}),
                **({"keypoints": list(points), "num_keypoints": sum(1 for v in points[2::3] if v > 0)}
                   if points is not None else {}),
            })
    categories = [{"id": k, "name": name} for name, k in category_ids.items()]
    if keypoint_names is not None:
        for category in categories:
            category.update(keypoints=list(keypoint_names), skeleton=[],
                            **({"keypoint_flip_idx": list(keypoint_flip_idx)} if keypoint_flip_idx is not None else {}))
    # file_name holds the full path: os.path.join("", path) keeps it as is.
    return index_coco({"images": coco_images, "annotations": annotations, "categories": categories}, "",
                      source, None if classes is None else list(classes))


def build_format(cfg) -> DatasetFormat:
    """The dataset format object of `cfg.dataset` (its `_target_`, the other keys as arguments)."""
    from detector.instantiate import ComponentArgumentError, instantiate

    data = cfg.dataset
    if "_target_" not in data:
        raise DatasetError(f"dataset={data.name}: the dataset config has no _target_ naming its format class "
                           "(e.g. _target_: detector.data.coco_format.CocoFormat); see conf/dataset/*.yaml.")
    try:
        fmt = instantiate(data, name=str(data.name))
    except ComponentArgumentError:
        raise
    except TypeError as error:
        # A subclass passes the common keys on with **common, so a misspelt key surfaces
        # in the base class: name the config node, as instantiate does for the others.
        if "__init__() got an unexpected keyword argument" not in str(error):
            raise
        raise ComponentArgumentError(f"dataset: {data._target_} does not take the keys of its config node: "
                                     f"{error}.") from None
    if not isinstance(fmt, DatasetFormat):
        raise DatasetError(f"dataset._target_={data._target_}: made a {type(fmt).__name__}, not a "
                           "detector.data.formats.DatasetFormat subclass.")
    return fmt


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
