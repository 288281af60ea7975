"""COCO metrics as people and files read them: the 12-line summary in COCOeval's wording, the
per-category table, and the metrics.json document.

Printed here, not by the backends (whose stdout is silenced), so the output looks the same
whichever backend ran; tools/evaluate.py and the training run's evaluation share it.
"""
from __future__ import annotations

from typing import Any

from detector.evaluation.coco_backends import KEYPOINT_STAT_NAMES, STAT_NAMES
from detector.evaluation.coco_checks import EVALUATION_IOU_TYPES

# COCOeval.summarize's lines, in the order of STAT_NAMES.
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
# COCOeval.summarize's keypoint lines (one maxDets, 20), in the order of KEYPOINT_STAT_NAMES.
_KEYPOINT_SUMMARY_LINES = (
    ("Average Precision", "(AP)", "0.50:0.95", "all", 20),
    ("Average Precision", "(AP)", "0.50", "all", 20),
    ("Average Precision", "(AP)", "0.75", "all", 20),
    ("Average Precision", "(AP)", "0.50:0.95", "medium", 20),
    ("Average Precision", "(AP)", "0.50:0.95", "large", 20),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 20),
    ("Average Recall", "(AR)", "0.50", "all", 20),
    ("Average Recall", "(AR)", "0.75", "all", 20),
    ("Average Recall", "(AR)", "0.50:0.95", "medium", 20),
    ("Average Recall", "(AR)", "0.50:0.95", "large", 20),
)


def format_summary(metrics: dict[str, Any], iou_type: str = "bbox") -> str:
    """The 12-line summary in COCOeval's wording (10 lines for keypoints), values to 3 decimals."""
    lines = []
    if iou_type == "keypoints":
        rows = zip(_KEYPOINT_SUMMARY_LINES, KEYPOINT_STAT_NAMES)
    else:
        rows = zip(_SUMMARY_LINES, STAT_NAMES)
    for (title, short, iou, area, max_dets), name in rows:
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
    """The metrics.json shape: {"iteration": N, "bbox": {...}} -- and "segm": {...} for masks,
    "keypoints": {...} for keypoints.

    `metrics` is either one box evaluation (evaluate_boxes) or evaluate_results' dict keyed
    by IoU type ({"bbox": ..., "segm": ..., "keypoints": ...})."""
    if metrics and set(metrics) <= set(EVALUATION_IOU_TYPES):
        return {"iteration": iteration,
                **{iou_type: metrics[iou_type] for iou_type in EVALUATION_IOU_TYPES if iou_type in metrics}}
    return {"iteration": iteration, "bbox": metrics}
