"""COCO AP of a list of detections against a COCO ground truth: boxes ("bbox") and masks ("segm").

Two interchangeable backends compute the same numbers: faster-coco-eval (C++ matching
and accumulation, the default) and the reference pycocotools. The summary and the
per-category table are printed by this module, not by the backends, so the output looks
the same whichever backend ran.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

BACKENDS = ("faster_coco_eval", "pycocotools")
# What a detection is compared by: its box, or its mask (an RLE "segmentation").
IOU_TYPES = ("bbox", "segm")
# The keys each kind of result needs; the others are dropped from the copies the backends get
# (a "bbox" next to a "segmentation" would make pycocotools measure the mask's size by its box).
_RESULT_KEYS = {
    "bbox": ("image_id", "category_id", "bbox", "score"),
    "segm": ("image_id", "category_id", "segmentation", "score"),
}

# The order of COCOeval.stats: 6 AP numbers then 6 AR numbers.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_SUMMARY_LINES = (
    ("Average Precision", "(AP)", "0.50:0.95", "all", 100),
    ("Average Precision", "(AP)", "0.50", "all", 100),
    ("Average Precision", "(AP)", "0.75", "all", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "small", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "medium", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "large", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 1),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 10),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "small", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "medium", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "large", 100),
)


class EvaluationError(ValueError):
    """Ground truth or results that cannot be evaluated."""


def load_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{what} file '{path}' does not exist.")
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{what} file '{path}' is not valid JSON: {error}") from None


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


def check_iou_type(iou_type: str) -> str:
    if iou_type not in IOU_TYPES:
        raise EvaluationError(f"Unknown IoU type '{iou_type}'; choose from {IOU_TYPES}.")
    return iou_type


def check_results(results: list[dict], gt: dict, iou_type: str = "bbox") -> None:
    check_iou_type(iou_type)
    images = {image["id"]: image for image in gt.get("images", [])}
    category_ids = {category["id"] for category in gt.get("categories", [])}
    for index, det in enumerate(results):
        missing = [key for key in _RESULT_KEYS[iou_type] if key not in det]
        if missing:
            if iou_type == "bbox":
                hint = " (it has a segmentation: evaluate masks with iou type segm)" if "segmentation" in det else ""
                raise EvaluationError(f"Result #{index} lacks the key(s) {missing}; COCO box results need image_id, category_id, bbox [x, y, w, h], score{hint}.")
            raise EvaluationError(f"Result #{index} lacks the key(s) {missing}; COCO segm results need image_id, category_id, "
                                  "segmentation (an RLE {size: [h, w], counts}), score.")
        if det["image_id"] not in images:
            raise EvaluationError(f"Result #{index} has image_id {det['image_id']}, which is not in the ground truth.")
        if det["category_id"] not in category_ids:
            raise EvaluationError(
                f"Result #{index} has category_id {det['category_id']}, which is not a ground-truth category "
                f"(valid: {sorted(category_ids)[:20]}{' ...' if len(category_ids) > 20 else ''})."
            )
        if iou_type == "segm":
            _check_result_mask(index, det, images[det["image_id"]])


def _check_result_mask(index: int, det: dict, image: dict) -> None:
    segmentation = det["segmentation"]
    # Both backends take the area and the box of a result from its RLE: polygons are not accepted there.
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise EvaluationError(f"Result #{index} has a segmentation of type {type(segmentation).__name__}; "
                              "segm results need an RLE {size: [height, width], counts} "
                              "(detector.data.masks.mask_to_rle makes one from a binary mask).")
    size = list(segmentation["size"]) if isinstance(segmentation["size"], (list, tuple)) else segmentation["size"]
    expected = [image.get("height"), image.get("width")]
    if None not in expected and size != expected:
        raise EvaluationError(f"Result #{index} has an RLE of size {size} (height, width) on image {det['image_id']}, "
                              f"which is {expected[0]}x{expected[1]}; masks must cover the whole image.")


def check_gt_masks(gt: dict) -> None:
    """segm evaluation rasterises every ground-truth object: each needs a segmentation and its
    image a height and width."""
    from detector.data.masks import MaskFormatError, check_segmentation

    images = {image["id"]: image for image in gt.get("images", [])}
    for image in images.values():
        if "height" not in image or "width" not in image:
            raise EvaluationError(f"Ground-truth image id {image['id']} has no height/width; segm evaluation needs both.")
    for ann in gt.get("annotations", []):
        if "segmentation" not in ann:
            raise EvaluationError(f"Ground-truth annotation id {ann.get('id')} has no segmentation; segm evaluation "
                                  "needs polygons or RLE for every object (use --iou-type bbox for box-only data).")
        image = images.get(ann.get("image_id"), {})
        try:
            check_segmentation(ann["segmentation"], image.get("height"), image.get("width"), ann.get("id"))
        except MaskFormatError as error:
            raise EvaluationError(f"Ground truth: {error}") from None


def _copy_records(records: list[dict]) -> list[dict]:
    return [dict(record) for record in records]


def _result_copies(results: list[dict], iou_type: str) -> list[dict]:
    keys = _RESULT_KEYS[iou_type]
    copies = [{key: det[key] for key in keys} for det in results]
    if iou_type == "segm":
        # An RLE's size may come as a tuple; a str counts is what both libraries expect.
        for det in copies:
            det["segmentation"] = dict(det["segmentation"])
    return copies


def run_backend(backend: str, gt: dict, results: list[dict], image_ids: Sequence[int] | None,
                iou_type: str = "bbox"):
    """Return (stats[12], precision array [T, R, K, A, M], category ids in K order)."""
    check_iou_type(iou_type)
    if backend not in BACKENDS:
        raise EvaluationError(f"Unknown evaluator '{backend}'; test.evaluator must be one of {BACKENDS}.")
    # Both libraries print progress and mutate their inputs (loadRes adds ids and areas to each
    # record, index building adds fields): they get fresh records. Copying the records alone
    # is enough -- nothing replaces items inside a box or a polygon -- and a deep copy of a
    # large results list cost several times the evaluation itself.
    results = _result_copies(results, iou_type)
    # Matching builds millions of small Python objects; the cyclic garbage collector would
    # rescan all of them again and again (half the evaluation time). Nothing here makes cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _evaluate_with(backend, gt, results, image_ids, iou_type)
    finally:
        if gc_was_enabled:
            gc.enable()


def _evaluate_with(backend: str, gt: dict, results: list[dict], image_ids: Sequence[int] | None, iou_type: str):
    gt = {**gt, **{key: _copy_records(gt[key]) for key in ("images", "annotations", "categories") if key in gt}}
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "faster_coco_eval":
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt = COCO(gt)
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *a, **k: None)
        else:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(value) for value in np.asarray(evaluator.stats)[: len(STAT_NAMES)]]
    return stats, np.asarray(evaluator.eval["precision"]), list(evaluator.params.catIds)


def _fraction_or_none(value: float) -> float | None:
    # COCOeval reports -1 where a bucket has no ground truth: that is "undefined", not 0.
    return None if value < 0 or math.isnan(value) else float(value)


def evaluate_coco(
    coco_gt: Any,
    results: list[dict],
    iou_type: str = "bbox",
    backend: str = "faster_coco_eval",
    image_ids: Iterable[int] | None = None,
) -> dict[str, Any]:
    """COCO metrics of `results` (COCO results format) as fractions, by box or by mask.

    `iou_type` "bbox" compares each result's "bbox" [x, y, w, h]; "segm" its "segmentation"
    (an RLE of the whole image) with the ground truth's polygons/RLE, and sizes objects and
    detections by their mask area. Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1",
    ..., "ARl", "per_category": {name: AP}}; a value is None where COCO leaves it undefined
    (no ground truth of that size or category). `image_ids` restricts the evaluation to those
    images (default: every ground-truth image).
    """
    check_iou_type(iou_type)
    gt = _gt_dataset(coco_gt)
    if not isinstance(results, list):
        raise EvaluationError(f"Results must be a list of detections, got {type(results).__name__}.")
    check_results(results, gt, iou_type)
    if iou_type == "segm":
        check_gt_masks(gt)
    image_ids = None if image_ids is None else list(image_ids)
    categories = sorted(gt.get("categories", []), key=lambda c: c["id"])
    if not results:
        # Both backends refuse an empty results list; with no detections every AP is 0.
        metrics: dict[str, Any] = {name: 0.0 for name in STAT_NAMES}
        metrics["per_category"] = {c["name"]: 0.0 for c in categories}
        return metrics
    stats, precision, category_ids = run_backend(backend, gt, results, image_ids, iou_type)
    metrics = {name: _fraction_or_none(value) for name, value in zip(STAT_NAMES, stats)}
    names = {c["id"]: c["name"] for c in categories}
    per_category = {}
    for k, category_id in enumerate(category_ids):
        # IoU 0.50:0.95, all recall points, area "all", maxDets 100 -- the AP column.
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_category[names[category_id]] = float(values.mean()) if values.size else None
    metrics["per_category"] = per_category
    return metrics


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
) -> dict[str, dict[str, Any]]:
    """evaluate_coco for each IoU type: {"bbox": metrics, "segm": metrics} (the types asked for).

    A mask model's results carry both "bbox" and "segmentation", so one list serves both."""
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    for iou_type in iou_types:
        check_iou_type(iou_type)
    gt = _gt_dataset(coco_gt)
    image_ids = None if image_ids is None else list(image_ids)
    return {iou_type: evaluate_coco(gt, results, iou_type, backend, image_ids) for iou_type in iou_types}


def format_summary(metrics: dict[str, Any]) -> str:
    """The 12-line summary in COCOeval's wording, values to 3 decimals."""
    lines = []
    for (title, short, iou, area, max_dets), name in zip(_SUMMARY_LINES, STAT_NAMES):
        value = metrics.get(name)
        value = -1.0 if value is None else value
        lines.append(f" {title:<18} {short} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {value:0.3f}")
    return "\n".join(lines)


def format_per_category(per_category: dict[str, float | None], columns: int = 3) -> str:
    """A table of per-category AP (in percent, as is customary for reading)."""
    cells = [(name, "  n/a" if ap is None else f"{100 * ap:5.1f}") for name, ap in per_category.items()]
    if not cells:
        return ""
    width = max(len(name) for name, _ in cells)
    header = " | ".join(f"{'category':<{width}} | {'AP':>5}" for _ in range(min(columns, len(cells))))
    rows = [header, "-" * len(header)]
    for start in range(0, len(cells), columns):
        chunk = cells[start : start + columns]
        rows.append(" | ".join(f"{name:<{width}} | {ap:>5}" for name, ap in chunk))
    return "\n".join(rows)


def metrics_document(metrics: dict[str, Any], iteration: int | None) -> dict[str, Any]:
    """The metrics.json shape: {"iteration": N, "bbox": {...}} -- and "segm": {...} for masks.

    `metrics` is either one box evaluation (evaluate_boxes) or evaluate_results' dict keyed
    by IoU type ({"bbox": ..., "segm": ...})."""
    if metrics and set(metrics) <= set(IOU_TYPES):
        return {"iteration": iteration, **{iou_type: metrics[iou_type] for iou_type in IOU_TYPES if iou_type in metrics}}
    return {"iteration": iteration, "bbox": metrics}


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (temporary file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(obj, handle)
    os.replace(tmp, path)
    return path
