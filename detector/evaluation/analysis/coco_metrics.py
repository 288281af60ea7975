"""COCO AP (by box or by mask) and precision-recall curves from the evaluator backends.

All AP numbers of the analysis come from COCOeval (pycocotools or faster-coco-eval) --
including the AP of each oracle-fixed set of detections -- so the baseline equals what
tools/evaluate.py reports. The precision array eval['precision'] is indexed
[IoU threshold T, recall threshold R (101 points), category K, area A (all, small,
medium, large), max detections M (1, 10, 100)]; -1 marks "no ground truth there".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# run_backend is the one place that drives either backend (quietly, on copies of the inputs);
# reusing it keeps the analysis's AP identical to tools/evaluate.py's.
from detector.evaluation.coco_backends import STAT_NAMES, run_backend
from detector.evaluation.coco_checks import EvaluationError

# COCOeval's default parameters (the backends use the same).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_NAMES = ("all", "small", "medium", "large")
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
MAX_DETS_INDEX = 2  # maxDets=100


def iou_index(iou: float) -> int:
    """Index of `iou` among COCO's thresholds 0.50, 0.55, ..., 0.95."""
    index = int(np.argmin(np.abs(IOU_THRESHOLDS - iou)))
    if abs(IOU_THRESHOLDS[index] - iou) > 1e-9:
        raise EvaluationError(f"IoU {iou} is not one of COCO's thresholds "
                              f"{[round(float(t), 2) for t in IOU_THRESHOLDS]}; AP can only be read at those.")
    return index


@dataclass
class BoxMetrics:
    stats: dict            # the 12 COCO numbers (None where undefined)
    precision: np.ndarray  # [T, R, K, A, M]
    category_ids: list     # K order

    def ap(self, iou: float | None = None, area: str = "all", category_id: int | None = None) -> float | None:
        """Mean precision over recall (and over IoU 0.5:0.95 when iou is None), like summarize().

        Returns None where no ground truth exists (COCO's -1)."""
        values = self.precision[:, :, :, AREA_NAMES.index(area), MAX_DETS_INDEX]
        if iou is not None:
            values = values[[iou_index(iou)]]
        if category_id is not None:
            values = values[:, :, self.category_ids.index(category_id)]
        values = values[values > -1]
        return float(np.mean(values)) if values.size else None

    def pr_curve(self, category_id: int, iou: float = 0.5, area: str = "all") -> np.ndarray:
        """Precision at the 101 recall thresholds (-1 where undefined)."""
        k = self.category_ids.index(category_id)
        return self.precision[iou_index(iou), :, k, AREA_NAMES.index(area), MAX_DETS_INDEX].copy()


def _no_detection_precision(gt: dict) -> tuple[np.ndarray, list]:
    """What COCOeval would report without any detection: 0 where there is ground truth."""
    category_ids = sorted(int(c["id"]) for c in gt["categories"])
    precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(category_ids), len(AREA_NAMES), 3))
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        area = float(ann["area"]) if "area" in ann else float(ann["bbox"][2] * ann["bbox"][3])
        k = category_ids.index(int(ann["category_id"]))
        for a, (low, high) in enumerate(AREA_RANGES):
            if low <= area <= high:
                precision[:, :, k, a, :] = 0.0
    return precision, category_ids


def _with_coco_defaults(gt: dict) -> dict:
    """COCOeval reads "area" and "iscrowd" of every annotation; exports often omit them."""
    annotations = gt["annotations"]
    if all("area" in a and "iscrowd" in a for a in annotations):
        return gt
    filled = [{"area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0, **a} for a in annotations]
    return {**gt, "annotations": filled}


def box_metrics(gt: dict, results: list[dict], backend: str = "faster_coco_eval", iou_type: str = "bbox") -> BoxMetrics:
    """COCO evaluation of `results` against `gt` (a COCO dict), every image; by box, or by
    mask with iou_type "segm".

    Annotations without "area" get their box area and without "iscrowd" 0 (as inputs.py)."""
    gt = _with_coco_defaults(gt)
    if results:
        stats, precision, category_ids = run_backend(backend, gt, results, None, iou_type)
        named = {name: (None if value < 0 else float(value)) for name, value in zip(STAT_NAMES, stats)}
        return BoxMetrics(named, precision, [int(c) for c in category_ids])
    # The backends refuse an empty list (an oracle may remove every detection).
    precision, category_ids = _no_detection_precision(gt)
    metrics = BoxMetrics({}, precision, category_ids)
    for name, area in zip(STAT_NAMES[:6], ("all", "all", "all", "small", "medium", "large")):
        iou = {"AP50": 0.5, "AP75": 0.75}.get(name)
        metrics.stats[name] = metrics.ap(iou, area)
    for name in STAT_NAMES[6:]:
        metrics.stats[name] = 0.0 if metrics.stats["AP"] is not None else None
    return metrics
