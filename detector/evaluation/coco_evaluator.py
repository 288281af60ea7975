"""COCO AP of a list of detections against a COCO ground truth: boxes ("bbox"), masks ("segm")
and keypoints ("keypoints", by COCO's object keypoint similarity).

The evaluation itself, from inputs to metrics as fractions: the inputs are checked
(coco_checks), one of two interchangeable backends computes the numbers (coco_backends), and
the per-category AP is read off its precision array here. Printing the summary and writing
files are coco_summary's and json_files'.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Sequence

from detector.evaluation.coco_backends import run_backend, stat_names
from detector.evaluation.coco_checks import (EvaluationError, check_gt_keypoints, check_gt_masks, check_iou_type,
                                             check_results)
from detector.evaluation.json_files import load_json


def _gt_dataset(coco_gt: Any) -> dict:
    """Accept a pycocotools/faster-coco-eval COCO object, a COCO dict or a path."""
    if isinstance(coco_gt, (str, os.PathLike)):
        return load_json(coco_gt, "Ground-truth")
    if isinstance(coco_gt, dict):
        return coco_gt
    dataset = getattr(coco_gt, "dataset", None)
    if not isinstance(dataset, dict):
        raise EvaluationError(f"Expected a COCO object, a COCO dict or a path, got {type(coco_gt).__name__}.")
    return dataset


def _fraction_or_none(value: float) -> float | None:
    # COCOeval reports -1 where a bucket has no ground truth: that is "undefined", not 0.
    return None if value < 0 or math.isnan(value) else float(value)


def evaluate_coco(
    coco_gt: Any,
    results: list[dict],
    iou_type: str = "bbox",
    backend: str = "faster_coco_eval",
    image_ids: Iterable[int] | None = None,
    keypoint_sigmas: Sequence[float] | None = None,
) -> dict[str, Any]:
    """COCO metrics of `results` (COCO results format) as fractions, by box, mask or keypoints.

    `iou_type` "bbox" compares each result's "bbox" [x, y, w, h]; "segm" its "segmentation"
    (an RLE of the whole image) with the ground truth's polygons/RLE, and sizes objects and
    detections by their mask area. Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1",
    ..., "ARl", "per_category": {name: AP}}; a value is None where COCO leaves it undefined
    (no ground truth of that size or category). `image_ids` restricts the evaluation to those
    images (default: every ground-truth image).

    "keypoints" compares each result's "keypoints" [x, y, v] * K with the annotations' by OKS,
    one sigma per keypoint: `keypoint_sigmas`, or COCO's person sigmas when None (then the
    categories must have COCO's 17 keypoints). Returns COCO's 10 keypoint stats {"AP", "AP50",
    "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl", "per_category"}.
    """
    check_iou_type(iou_type)
    gt = _gt_dataset(coco_gt)
    if not isinstance(results, list):
        raise EvaluationError(f"Results must be a list of detections, got {type(results).__name__}.")
    check_results(results, gt, iou_type)
    if iou_type == "segm":
        check_gt_masks(gt)
    if iou_type == "keypoints":
        keypoint_sigmas = keypoint_sigmas_for(gt, keypoint_sigmas)
    names_of_stats = stat_names(iou_type)
    image_ids = None if image_ids is None else list(image_ids)
    categories = sorted(gt.get("categories", []), key=lambda c: c["id"])
    if not results:
        # Both backends refuse an empty results list; with no detections every AP is 0.
        metrics: dict[str, Any] = {name: 0.0 for name in names_of_stats}
        metrics["per_category"] = {c["name"]: 0.0 for c in categories}
        return metrics
    stats, precision, category_ids = run_backend(backend, gt, results, image_ids, iou_type, keypoint_sigmas)
    metrics = {name: _fraction_or_none(value) for name, value in zip(names_of_stats, stats)}
    names = {c["id"]: c["name"] for c in categories}
    per_category = {}
    for k, category_id in enumerate(category_ids):
        # IoU 0.50:0.95, all recall points, area "all", the largest maxDets (100; 20 for keypoints) -- the AP column.
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_category[names[category_id]] = float(values.mean()) if values.size else None
    # faster-coco-eval's keypoint evaluation leaves out categories without images; pycocotools
    # lists them, undefined: both backends give every ground-truth category, in id order.
    metrics["per_category"] = {c["name"]: per_category.get(c["name"]) for c in categories}
    return metrics


def keypoint_sigmas_for(gt: dict, keypoint_sigmas: Sequence[float] | None) -> list[float]:
    """The OKS sigmas for this ground truth: the ones given, else COCO's person sigmas where the
    categories have COCO's 17 keypoints; anything else must be given (dataset.keypoint_sigmas)."""
    from detector.evaluation.keypoint_sigmas import COCO_PERSON_SIGMAS

    check_gt_keypoints(gt, keypoint_sigmas)
    if keypoint_sigmas is not None:
        return [float(s) for s in keypoint_sigmas]
    count = len(gt["categories"][0].get("keypoints") or ())
    if count != len(COCO_PERSON_SIGMAS):
        raise EvaluationError(f"The ground truth's categories have {count} keypoints, not COCO person's "
                              f"{len(COCO_PERSON_SIGMAS)}: give one OKS sigma per keypoint (dataset.keypoint_sigmas, "
                              "or --keypoint-sigmas for tools/evaluate.py).")
    return list(COCO_PERSON_SIGMAS)


def evaluate_boxes(
    coco_gt: Any,
    results: list[dict],
    backend: str = "faster_coco_eval",
    image_ids: Iterable[int] | None = None,
) -> dict[str, Any]:
    """COCO box metrics of `results`: evaluate_coco(..., iou_type="bbox")."""
    return evaluate_coco(coco_gt, results, "bbox", backend, image_ids)


def evaluate_results(
    coco_gt: Any,
    results: list[dict],
    iou_types: Sequence[str] = ("bbox",),
    backend: str = "faster_coco_eval",
    image_ids: Iterable[int] | None = None,
    keypoint_sigmas: Sequence[float] | None = None,
) -> dict[str, dict[str, Any]]:
    """evaluate_coco for each IoU type: {"bbox": metrics, "segm": metrics} (the types asked for).

    A mask model's results carry both "bbox" and "segmentation", a keypoint model's "bbox" and
    "keypoints", so one list serves each type."""
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    for iou_type in iou_types:
        check_iou_type(iou_type)
    gt = _gt_dataset(coco_gt)
    image_ids = None if image_ids is None else list(image_ids)
    return {iou_type: evaluate_coco(gt, results, iou_type, backend, image_ids, keypoint_sigmas)
            for iou_type in iou_types}
