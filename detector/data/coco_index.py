"""Turning a COCO-format dictionary into per-image training records and an evaluation GT.

This is the one place that decides what an annotation means, so the dataset, the VOC
converter and tools/check_dataset.py can never disagree:
  * category ids map to contiguous labels 1..K (sorted by id, or in the order of a
    `classes` list of names) and back;
  * crowd regions (iscrowd=1) stay out of the training targets but stay in the GT,
    where COCOeval ignores detections that fall on them;
  * zero-area boxes are dropped with a warning (they carry no region to learn);
  * keypoints ([x, y, v] triplets) ride along with their boxes too, as the file spells them
    (detector/data/keypoints.py reads them for a keypoint model);
  * segmentations (polygons / RLE) ride along with their boxes, as the file spells them:
    the records only point at them (no copy, no decoding), so box-only training pays
    nothing; build_dataset(with_masks=True) checks and compacts them for a mask model;
  * boxes that are NaN/inf, non-numeric, of negative size, outside the image, or of an
    unknown category make their image a bad sample: training on the rest of that image
    would teach the model that a real object is background.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from detector.modeling.boxes import clip_to_image

# Exported boxes often overshoot the border by rounding; such boxes are clipped. A box
# further out than this (pixels, plus this fraction of the image side) is an error.
OUTSIDE_TOLERANCE_PX = 1.0
OUTSIDE_TOLERANCE_FRACTION = 0.01

# Problem effects: what the dataset does about a problem.
FATAL = "fatal"                    # the file cannot be used at all
BAD_IMAGE = "bad_image"            # the image is a bad sample (skipped or an error)
BOX_DROPPED = "box_dropped"        # one box is left out, the image is still used
ANNOTATION_IGNORED = "annotation_ignored"  # an annotation that belongs to no usable image
REPORTED = "reported"              # wrong in the file, but the data can still be used as is


class DatasetError(ValueError):
    """Annotations or dataset settings that cannot be used at all; the message names the
    file (or key) and the reason. Training refuses them before any work starts."""


@dataclass
class Problem:
    file: str      # the image file, or the annotation file for problems of the JSON itself
    reason: str
    kind: str      # short machine name: nan_box, negative_size, zero_area, ...
    effect: str    # FATAL | BAD_IMAGE | BOX_DROPPED | ANNOTATION_IGNORED

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class ImageRecord:
    image_id: int
    path: str
    width: int
    height: int
    boxes: np.ndarray     # float32 [M, 4] x1, y1, x2, y2 in pixels; crowd regions excluded
    labels: np.ndarray    # int64 [M] in 1..K
    problem: str | None = None  # set when the annotations make this image a bad sample
    # One COCO segmentation per box (same order), as in the file (None: that annotation has
    # none), or None when no annotation of the image has one. build_dataset(with_masks=True)
    # packs them into a masks.PackedSegmentations; box-only training drops them.
    segmentations: list | None = None
    annotation_ids: list | None = None   # the boxes' annotation ids (named in mask errors)
    # One COCO keypoint list [x, y, v] * K per box, as in the file (None: that annotation has
    # none), or None when no annotation of the image has one; detector/data/keypoints.py
    # turns them into float32 [M, K, 3] for a keypoint model, box-only training drops them.
    keypoints: list | None = None


@dataclass
class DatasetIndex:
    records: list[ImageRecord]
    class_names: list[str]
    label_to_category_id: dict[int, int]
    gt_dict: dict                      # cleaned COCO dict for evaluation (crowd kept)
    problems: list[Problem] = field(default_factory=list)
    num_crowd: int = 0
    has_masks: bool = False            # some training box has a segmentation (polygons or RLE)


def classify_box(bbox, width: float, height: float) -> tuple[str, str] | None:
    """Why a COCO [x, y, w, h] box is unusable, as (kind, reason), or None when usable."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return "malformed_box", f"bbox {bbox!r} is not a list of 4 numbers [x, y, width, height]"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return "non_numeric_box", f"bbox {bbox!r} holds non-numeric values"
    if not all(math.isfinite(v) for v in bbox):
        return "nan_box", f"bbox {bbox!r} holds NaN or infinity"
    x, y, w, h = bbox
    if w < 0 or h < 0:
        return "negative_size", f"bbox {bbox!r} has a negative width or height"
    if w == 0 or h == 0:
        return "zero_area", f"bbox {bbox!r} has zero area"
    tol_x = OUTSIDE_TOLERANCE_PX + OUTSIDE_TOLERANCE_FRACTION * width
    tol_y = OUTSIDE_TOLERANCE_PX + OUTSIDE_TOLERANCE_FRACTION * height
    if x < -tol_x or y < -tol_y or x + w > width + tol_x or y + h > height + tol_y:
        return "outside_image", f"bbox {bbox!r} lies outside the {width}x{height} image"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "outside_image", f"bbox {bbox!r} lies outside the {width}x{height} image"
    return None


def category_mapping(categories: list[dict], classes, source: str) -> tuple[list[str], dict[int, int]]:
    """(class_names, label_to_category_id) from COCO categories.

    Without `classes`, labels follow sorted category ids. With `classes` (names), label i
    is the category named classes[i-1]; other categories are not trained or evaluated.
    """
    by_id = {}
    for category in categories:
        if not _hashable(category["id"]) or category["id"] is None:
            raise DatasetError(f"{source}: category {str(category)[:120]} has an id that is not a number or string")
        by_id[category["id"]] = str(category.get("name", category["id"]))
    if classes is None:
        ids = sorted(by_id)
        return [by_id[i] for i in ids], {label: cid for label, cid in enumerate(ids, start=1)}
    by_name = {name: cid for cid, name in by_id.items()}
    missing = [name for name in classes if name not in by_name]
    if missing:
        raise DatasetError(
            f"{source}: dataset.classes names {missing} are not categories of this file; "
            f"its categories are {sorted(by_name)}"
        )
    return list(classes), {label: by_name[name] for label, name in enumerate(classes, start=1)}


def check_coco_structure(coco, source: str) -> None:
    """Raise DatasetError unless `coco` has the top-level shape of a COCO file."""
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise DatasetError(f"{source}: not a COCO annotation file (no 'images' list at the top level)")
    categories = coco.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{source}: no 'categories' list (COCO files name their classes there, "
                           "e.g. \"categories\": [{\"id\": 1, \"name\": \"cat\"}])")
    for category in categories:
        if not isinstance(category, dict) or "id" not in category:
            raise DatasetError(f"{source}: category {str(category)[:120]} has no 'id'")
    if not isinstance(coco.get("annotations", []), list):
        raise DatasetError(f"{source}: 'annotations' is a {type(coco['annotations']).__name__}, not a list")


def index_coco(coco: dict, images_dir: str, source: str, classes=None) -> DatasetIndex:
    """Check a COCO dict and build training records plus the evaluation GT.

    source: the annotation file (or VOC folder), named in problems about the JSON itself.
    classes: optional list of category names fixing the labels (see category_mapping).
    Never raises for data problems except FATAL ones; every problem is in `.problems`.
    """
    problems: list[Problem] = []
    check_coco_structure(coco, source)
    categories = coco["categories"]
    annotations = coco.get("annotations", [])

    seen_cat = set()
    for category in categories:
        if category["id"] in seen_cat:
            problems.append(Problem(source, f"duplicate category id {category['id']}", "duplicate_category_id", FATAL))
        seen_cat.add(category["id"])
    class_names, label_to_cat = category_mapping(categories, None if classes is None else list(classes), source)
    cat_to_label = {cid: label for label, cid in label_to_cat.items()}

    images = {}
    order = []
    gt_images = []
    for entry in coco["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            problems.append(Problem(source, f"image entry {str(entry)[:120]} lacks 'id' or 'file_name'", "malformed_image", FATAL))
            continue
        image_id = entry["id"]
        path = os.path.join(images_dir, str(entry["file_name"]))
        if not _hashable(image_id):
            problems.append(Problem(path, f"image id {image_id!r} is not a number or string", "malformed_image", FATAL))
            continue
        if image_id in images:
            problems.append(Problem(source, f"duplicate image id {image_id} for {path} (also used by "
                                            f"{images[image_id]['path']})", "duplicate_image_id", FATAL))
            continue
        width, height = entry.get("width"), entry.get("height")
        problem = None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (width, height)):
            problem = f"image entry has no valid width/height ({width!r} x {height!r})"
            problems.append(Problem(path, problem, "bad_image_size", BAD_IMAGE))
            width, height = 0, 0
        images[image_id] = {"path": path, "width": int(width), "height": int(height), "boxes": [], "labels": [],
                            "segmentations": [], "annotation_ids": [], "keypoints": [], "problem": problem}
        order.append(image_id)
        gt_images.append(dict(entry))

    seen_ann = set()
    gt_annotations = []
    num_crowd = 0
    for ann in annotations:
        if not isinstance(ann, dict):
            problems.append(Problem(source, f"annotation {str(ann)[:120]} is not an object", "malformed_annotation",
                                    ANNOTATION_IGNORED))
            continue
        ann_id = ann.get("id") if _hashable(ann.get("id")) else repr(ann.get("id"))
        image = images.get(ann.get("image_id")) if _hashable(ann.get("image_id")) else None
        if image is None:
            problems.append(Problem(source, f"annotation id {ann_id} points at image id {ann.get('image_id')!r}, "
                                            "which is not in 'images'", "missing_image_id", ANNOTATION_IGNORED))
            continue
        path = image["path"]
        if ann_id is not None and ann_id in seen_ann:
            # Harmless for training; the GT copy gets a fresh id because pycocotools keys by it.
            problems.append(Problem(path, f"duplicate annotation id {ann_id}", "duplicate_annotation_id", REPORTED))
        seen_ann.add(ann_id)
        category_id = ann.get("category_id")
        if not _hashable(category_id) or category_id not in seen_cat:
            reason = f"annotation id {ann_id} has unknown category id {category_id!r}"
            problems.append(Problem(path, reason, "unknown_category", BAD_IMAGE))
            image["problem"] = image["problem"] or reason
            continue
        verdict = classify_box(ann.get("bbox"), image["width"], image["height"]) if image["width"] else None
        if verdict is not None:
            kind, reason = verdict
            where = f" ({ann['source']})" if "source" in ann else ""
            reason = f"annotation id {ann_id}{where}: {reason}"
            if kind == "zero_area":
                problems.append(Problem(path, reason + "; the box is dropped", kind, BOX_DROPPED))
            else:
                problems.append(Problem(path, reason, kind, BAD_IMAGE))
                image["problem"] = image["problem"] or reason
            continue
        if image["problem"] and not image["width"]:
            continue
        label = cat_to_label.get(category_id)
        if label is None:
            continue  # a category left out by dataset.classes
        gt_annotations.append(_gt_annotation(ann))
        if ann.get("iscrowd", 0):
            num_crowd += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        image["boxes"].append([x, y, x + w, y + h])
        image["labels"].append(label)
        # "segmentation": [] is what box-only exporters write: no mask.
        image["segmentations"].append(ann.get("segmentation") or None)
        image["annotation_ids"].append(ann_id)
        image["keypoints"].append(ann.get("keypoints") or None)

    records = []
    has_masks = False
    for image_id in order:
        image = images[image_id]
        boxes = np.asarray(image["boxes"], dtype=np.float32).reshape(-1, 4)
        if len(boxes):
            boxes = clip_to_image(boxes, (image["height"], image["width"]))
        segmentations = image["segmentations"]
        with_segmentation = any(s is not None for s in segmentations)
        has_masks = has_masks or with_segmentation
        keypoints = image["keypoints"] if any(k is not None for k in image["keypoints"]) else None
        records.append(ImageRecord(image_id, image["path"], image["width"], image["height"], boxes,
                                   np.asarray(image["labels"], dtype=np.int64), image["problem"],
                                   segmentations if with_segmentation else None,
                                   image["annotation_ids"] if with_segmentation else None, keypoints))

    _give_unique_ids(gt_annotations)
    kept_cat_ids = set(label_to_cat.values())
    gt_dict = {
        "info": coco.get("info", {}),
        "licenses": coco.get("licenses", []),
        "images": gt_images,
        "annotations": gt_annotations,
        "categories": [c for c in categories if c["id"] in kept_cat_ids],
    }
    return DatasetIndex(records, class_names, label_to_cat, gt_dict, problems, num_crowd, has_masks)


def _hashable(value) -> bool:
    return isinstance(value, (int, float, str)) or value is None


def _gt_annotation(ann: dict) -> dict:
    """The annotation as COCOeval needs it: with iscrowd and area present (and num_keypoints,
    the labelled ones, where it has keypoints: COCOeval ignores objects with none)."""
    if "iscrowd" in ann and "area" in ann and "id" in ann and ("keypoints" not in ann or "num_keypoints" in ann):
        return ann
    ann = dict(ann)
    ann.setdefault("iscrowd", 0)
    ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
    if isinstance(ann.get("keypoints"), list):
        ann.setdefault("num_keypoints", sum(1 for v in ann["keypoints"][2::3] if isinstance(v, (int, float)) and v > 0))
    return ann


def _give_unique_ids(annotations: list[dict]) -> None:
    """pycocotools indexes annotations by id: missing or repeated ids get fresh ones."""
    used = {a["id"] for a in annotations if isinstance(a.get("id"), int)}
    next_id = max(used, default=0) + 1
    seen = set()
    for i, ann in enumerate(annotations):
        if not isinstance(ann.get("id"), int) or ann["id"] in seen:
            ann = dict(ann)
            ann["id"] = next_id
            next_id += 1
            annotations[i] = ann
        seen.add(ann["id"])
