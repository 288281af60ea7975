"""Ground truth and detections regrouped per image, the way COCOeval sees them.

COCOeval keeps, for each (image, category), the `max_dets` highest-scoring detections
(a stable sort on the score, so ties keep their order in the results file) and ignores
the rest. The error analysis must look at exactly those detections, or its counts would
not add up to what AP measures; detections cut by `max_dets` are listed separately.
Crowd ground truth (iscrowd=1) is kept apart: it never counts as an object to find,
it only excuses detections that fall on it (see matching.py).

With iou_type "segm" objects and detections are compared by mask (pycocotools' mask IoU,
exactly what COCOeval uses for segm) and a detection's size is its mask area; its box is
the tight box around its mask.

TIDE's reference implementation keeps instead the `max_dets` best detections of each
image, all categories together (`max_dets_per="image"`); since those are also among the
best of their category, this only ever considers fewer detections.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

# The same checks (and messages) as tools/evaluate.py for results that name unknown images/classes.
from detector.evaluation.analysis.box_iou import coco_box_iou
from detector.evaluation.coco_checks import EvaluationError, check_gt_masks, check_iou_type, check_results

COCO_MAX_DETS = 100


@dataclass
class ImageGroup:
    """One image: its annotations and its considered detections (indices into the inputs).

    `det` is sorted by descending score (stable), `gt` keeps the annotation file order.
    """

    image_id: int
    gt: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    det: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class AnalysisInputs:
    """Flat arrays over all annotations / all results, plus the per-image grouping."""

    gt_boxes: np.ndarray          # [G, 4] x, y, w, h
    gt_labels: np.ndarray         # [G] category ids
    gt_crowd: np.ndarray          # [G] bool
    gt_area: np.ndarray           # [G] the annotation's "area" (what COCO's size ranges use)
    det_boxes: np.ndarray         # [D, 4] x, y, w, h
    det_labels: np.ndarray        # [D]
    det_scores: np.ndarray        # [D]
    det_considered: np.ndarray    # [D] bool: within the max_dets best of its (image, category)
    images: list[ImageGroup]
    category_ids: list[int]
    category_names: dict[int, str]
    det_area: np.ndarray | None = None   # [D] box area (bbox) or mask area (segm): COCO's size of a detection
    iou_type: str = "bbox"
    gt_masks: list | None = None         # segm: [G] compressed RLEs of the annotations
    det_masks: list | None = None        # segm: [D] compressed RLEs of the results

    def iou(self, dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
        """[len(dets), len(gts)] COCO IoU (by box or by mask); against a crowd region, the
        intersection over the detection's own area, as COCOeval."""
        dets, gts = np.asarray(dets, dtype=np.int64), np.asarray(gts, dtype=np.int64)
        if self.iou_type == "bbox":
            return coco_box_iou(self.det_boxes[dets], self.gt_boxes[gts], crowd)
        if len(dets) == 0 or len(gts) == 0:
            return np.zeros((len(dets), len(gts)), dtype=np.float64)
        crowd = np.zeros(len(gts), dtype=bool) if crowd is None else np.asarray(crowd, dtype=bool)
        return np.asarray(mask_utils.iou([self.det_masks[d] for d in dets], [self.gt_masks[g] for g in gts],
                                         [int(c) for c in crowd]), dtype=np.float64).reshape(len(dets), len(gts))


def _bbox_array(items: list[dict], what: str) -> np.ndarray:
    boxes = np.zeros((len(items), 4), dtype=np.float64)
    for index, item in enumerate(items):
        bbox = item.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise EvaluationError(f"{what} #{index} has bbox {bbox!r}; expected [x, y, width, height].")
        boxes[index] = bbox
    return boxes


MAX_DETS_PER = ("category", "image")


def _masks(gt: dict, results: list[dict]) -> tuple[list, list, np.ndarray]:
    """(annotation RLEs, result RLEs, result mask areas, result boxes) for segm.

    The results' RLEs were checked against their images by check_results; they are taken
    as they are (validating every run in Python would cost more than the analysis)."""
    from detector.data.masks import rle_area, rle_to_box, segmentation_to_rle

    images = {image["id"]: image for image in gt["images"]}
    gt_masks = []
    for ann in gt["annotations"]:
        image = images[ann["image_id"]]
        gt_masks.append(segmentation_to_rle(ann["segmentation"], image["height"], image["width"], ann.get("id")))
    det_masks = []
    for det in results:
        counts = det["segmentation"]["counts"]
        counts = counts.encode("ascii") if isinstance(counts, str) else counts
        det_masks.append({"size": [int(v) for v in det["segmentation"]["size"]], "counts": counts})
    det_area = np.array([rle_area(rle) for rle in det_masks], dtype=np.float64)
    det_boxes = np.array([rle_to_box(rle) for rle in det_masks], dtype=np.float64).reshape(-1, 4)
    return gt_masks, det_masks, det_area, det_boxes


def prepare_inputs(gt: dict, results: list[dict], max_dets: int = COCO_MAX_DETS,
                   max_dets_per: str = "category", iou_type: str = "bbox") -> AnalysisInputs:
    """Validate and regroup a COCO ground-truth dict and a COCO results list.

    `max_dets_per`: "category" keeps the max_dets best of each (image, category), as COCOeval;
    "image" the max_dets best of each image, as TIDE. `iou_type` "segm" compares masks."""
    check_iou_type(iou_type)
    if max_dets_per not in MAX_DETS_PER:
        raise ValueError(f"max_dets_per is '{max_dets_per}'; choose from {MAX_DETS_PER}")
    if not isinstance(gt, dict) or "annotations" not in gt or "images" not in gt or "categories" not in gt:
        raise EvaluationError("Ground truth must be a COCO dict with 'images', 'annotations' and 'categories'.")
    if not isinstance(results, list):
        raise EvaluationError(f"Results must be a list of detections, got {type(results).__name__}.")
    check_results(results, gt, iou_type)
    annotations = gt["annotations"]
    image_ids = sorted({int(image["id"]) for image in gt["images"]})
    known_images = set(image_ids)
    for index, ann in enumerate(annotations):
        if ann.get("image_id") not in known_images:
            raise EvaluationError(f"Ground-truth annotation #{index} (id {ann.get('id')}) has image_id "
                                  f"{ann.get('image_id')}, which is not in 'images'.")
    category_ids = {c["id"] for c in gt["categories"]}
    for index, ann in enumerate(annotations):
        if ann.get("category_id") not in category_ids:
            raise EvaluationError(f"Ground-truth annotation #{index} (id {ann.get('id')}) has category_id "
                                  f"{ann.get('category_id')}, which is not in 'categories'.")
    gt_boxes = _bbox_array(annotations, "Ground-truth annotation")
    gt_masks = det_masks = None
    if iou_type == "segm":
        check_gt_masks(gt)
        gt_masks, det_masks, det_area, det_boxes = _masks(gt, results)
    else:
        det_boxes = _bbox_array(results, "Result")
        det_area = det_boxes[:, 2] * det_boxes[:, 3]
    # COCO measures size by the annotation's "area" (the mask area for COCO itself);
    # files without it fall back to the box area.
    gt_area = np.array([float(a["area"]) if "area" in a else float(b[2] * b[3])
                        for a, b in zip(annotations, gt_boxes)], dtype=np.float64)
    det_scores = np.array([float(r["score"]) for r in results], dtype=np.float64)
    det_labels = np.array([int(r["category_id"]) for r in results], dtype=np.int64)

    gt_by_image: dict[int, list[int]] = defaultdict(list)
    for index, ann in enumerate(annotations):
        gt_by_image[int(ann["image_id"])].append(index)
    dets_by_pair: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, det in enumerate(results):
        dets_by_pair[(int(det["image_id"]), int(det["category_id"]))].append(index)

    considered = np.zeros(len(results), dtype=bool)
    dets_by_image: dict[int, list[int]] = defaultdict(list)
    for (image_id, _), indices in dets_by_pair.items():
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(-det_scores[indices], kind="mergesort")
        kept = indices[order[:max_dets]]
        considered[kept] = True
        dets_by_image[image_id].extend(kept.tolist())

    images = []
    for image_id in image_ids:
        det = np.asarray(dets_by_image.get(image_id, []), dtype=np.int64)
        # Stable on the results-file order, like COCOeval's per-category sort, so each
        # category's sub-sequence is exactly the order COCOeval matches in.
        det = det[np.argsort(det, kind="mergesort")]
        det = det[np.argsort(-det_scores[det], kind="mergesort")]
        if max_dets_per == "image" and len(det) > max_dets:
            considered[det[max_dets:]] = False
            det = det[:max_dets]
        images.append(ImageGroup(image_id, np.asarray(gt_by_image.get(image_id, []), dtype=np.int64), det))

    categories = sorted(gt["categories"], key=lambda c: c["id"])
    return AnalysisInputs(
        gt_boxes=gt_boxes,
        gt_labels=np.array([int(a["category_id"]) for a in annotations], dtype=np.int64),
        gt_crowd=np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool),
        gt_area=gt_area,
        det_boxes=det_boxes,
        det_labels=det_labels,
        det_scores=det_scores,
        det_considered=considered,
        images=images,
        category_ids=[int(c["id"]) for c in categories],
        category_names={int(c["id"]): str(c.get("name", c["id"])) for c in categories},
        det_area=det_area,
        iou_type=iou_type,
        gt_masks=gt_masks,
        det_masks=det_masks,
    )
