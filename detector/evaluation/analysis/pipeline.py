"""The whole error analysis of one results file: numbers first, then files.

`analyze()` returns the analysis as a plain dict (the content of analysis.json);
`write_analysis()` runs it and writes summary.md, analysis.json and the pictures.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detector.evaluation.analysis.coco_metrics import box_metrics
from detector.evaluation.analysis.confusion import DEFAULT_SCORE_THRESH, confusion_matrix
from detector.evaluation.analysis.errors import (
    ERROR_KINDS, ERROR_NAMES, FP_KINDS, GT_COVERED, GT_MISSED, IGNORED, NOT_CONSIDERED, TIDE_BG_IOU,
    TIDE_FG_IOU, TP, classify_errors,
)
from detector.evaluation.analysis.inputs import COCO_MAX_DETS, prepare_inputs
from detector.evaluation.analysis.oracle import ORACLES, SPECIAL_ORACLES, oracle_gains
from detector.evaluation.analysis.per_image import per_image_recall
from detector.evaluation.analysis.sizes import size_counts
from detector.evaluation.analysis.tide_ap import tide_gains

PR_CURVE_IOUS = (0.5, 0.75)
# How the AP after each fix is computed (docs/error_analysis.md):
#   "tide" -- TIDE's own AP over its data points, as tidecv 1.0.1 (the default, tide_ap.py);
#   "coco" -- COCOeval re-run on the fixed detections / ground truth (oracle.py).
DAP_EVALUATORS = ("tide", "coco")


def _counts(inputs, table) -> dict[str, int]:
    counts = {
        "detections": len(inputs.det_scores),
        "not_considered": table.count(NOT_CONSIDERED),
        "ignored": table.count(IGNORED),
        "tp": table.count(TP),
    }
    counts.update({kind: table.count(kind) for kind in ERROR_KINDS})
    counts["considered"] = counts["tp"] + sum(counts[kind] for kind in FP_KINDS)
    counts["covered"] = int(np.sum(table.gt_state == GT_COVERED))
    counts["objects"] = int(np.sum(~inputs.gt_crowd))
    counts["crowd_regions"] = int(np.sum(inputs.gt_crowd))
    return counts


def _per_class(inputs, table, metrics, fg_iou) -> list[dict]:
    rows = []
    for category_id in inputs.category_ids:
        own_dets = inputs.det_labels == category_id
        own_gts = inputs.gt_labels == category_id
        row = {
            "category_id": category_id,
            "name": inputs.category_names[category_id],
            "AP": metrics.ap(category_id=category_id),
            f"AP{round(fg_iou * 100)}": metrics.ap(iou=fg_iou, category_id=category_id),
            "objects": int(np.sum(own_gts & ~inputs.gt_crowd)),
            "detections": int(np.sum(own_dets & (table.det_kind != NOT_CONSIDERED) & (table.det_kind != IGNORED))),
            "tp": int(np.sum(own_dets & (table.det_kind == TP))),
        }
        for kind in FP_KINDS:
            row[kind] = int(np.sum(own_dets & (table.det_kind == kind)))
        row["missed"] = int(np.sum(own_gts & (table.gt_state == GT_MISSED)))
        row["covered"] = int(np.sum(own_gts & (table.gt_state == GT_COVERED)))
        rows.append(row)
    return rows


def analyze(
    gt: dict,
    results: list[dict],
    fg_iou: float = TIDE_FG_IOU,
    bg_iou: float = TIDE_BG_IOU,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    max_dets: int = COCO_MAX_DETS,
    backend: str = "faster_coco_eval",
    dap_evaluator: str = "tide",
    iou_type: str = "bbox",
) -> dict:
    """TIDE error breakdown with dAP, confusion matrix, per-class, per-size and per-image numbers.

    `gt` is a COCO ground-truth dict, `results` a COCO results list. AP values are fractions;
    None where COCO leaves them undefined. `dap_evaluator` (DAP_EVALUATORS) chooses how the
    AP after each fix is computed; "dap_base_ap" is the AP the dAP values are relative to
    (TIDE's own AP at fg IoU, or COCO's, which is "base_ap"). `iou_type` "segm" compares
    detections with objects by mask everywhere (COCO AP, TIDE's errors, the confusion matrix),
    as tidecv's mask mode does."""
    if dap_evaluator not in DAP_EVALUATORS:
        raise ValueError(f"dap_evaluator is '{dap_evaluator}'; choose from {DAP_EVALUATORS}")
    inputs = prepare_inputs(gt, results, max_dets, iou_type=iou_type)
    table = classify_errors(inputs, fg_iou, bg_iou)
    metrics = box_metrics(gt, results, backend, iou_type)
    ap_name = f"AP{round(fg_iou * 100)}"
    base_ap = metrics.ap(iou=fg_iou)
    if dap_evaluator == "tide":
        # TIDE keeps the max_dets best detections per image (not per image and category).
        tide_inputs = prepare_inputs(gt, results, max_dets, max_dets_per="image", iou_type=iou_type)
        same = np.array_equal(tide_inputs.det_considered, inputs.det_considered)
        tide_table = table if same else classify_errors(tide_inputs, fg_iou, bg_iou)
        dap_base_ap, gains = tide_gains(tide_inputs, tide_table, ORACLES)
    else:
        dap_base_ap = base_ap
        gains = oracle_gains(gt, results, inputs, table, base_ap, backend, ORACLES)
    counts = _counts(inputs, table)
    sizes = {}
    for name, row in size_counts(inputs, table).items():
        sizes[name] = {"AP": metrics.ap(area=name), ap_name: metrics.ap(iou=fg_iou, area=name), **row}
    labels = [inputs.category_names[c] for c in inputs.category_ids] + ["background"]
    pr_curves = {}
    for category_id in inputs.category_ids:
        curves = {f"{iou:.2f}": metrics.pr_curve(category_id, iou).tolist() for iou in PR_CURVE_IOUS}
        if any(value > -1 for value in curves[f"{PR_CURVE_IOUS[0]:.2f}"]):
            pr_curves[inputs.category_names[category_id]] = curves
    return {
        "settings": {"fg_iou": fg_iou, "bg_iou": bg_iou, "score_thresh": score_thresh, "max_dets": max_dets,
                     "evaluator": backend, "ap_name": ap_name, "dap_evaluator": dap_evaluator,
                     "iou_type": iou_type},
        "overall": dict(metrics.stats),
        "base_ap": base_ap,
        "dap_base_ap": dap_base_ap,
        "counts": counts,
        "errors": {
            kind: {"name": ERROR_NAMES[kind], "count": counts[kind], "ap_fixed": gains[kind]["ap"], "dap": gains[kind]["dap"]}
            for kind in ERROR_KINDS
        },
        "special": {kind: {"ap_fixed": gains[kind]["ap"], "dap": gains[kind]["dap"]} for kind in SPECIAL_ORACLES},
        "per_class": _per_class(inputs, table, metrics, fg_iou),
        "sizes": sizes,
        "confusion_matrix": {"iou": fg_iou, "score_thresh": score_thresh, "labels": labels,
                             "rows": "ground truth", "columns": "prediction",
                             "matrix": confusion_matrix(inputs, table, score_thresh).tolist()},
        "pr_curves": {"recall": [round(float(r), 2) for r in np.linspace(0, 1, 101)], "curves": pr_curves},
        "per_image": per_image_recall(inputs, table),
    }


def write_analysis(gt: dict, results: list[dict], output_dir: str | os.PathLike, sources: dict | None = None,
                   **options) -> dict:
    """Run analyze() and write summary.md, analysis.json and the PNGs into output_dir.

    `sources` (e.g. {"gt": path, "results": path}) is recorded in the settings."""
    from detector.evaluation.analysis.plots import write_plots
    from detector.evaluation.analysis.report import write_report

    analysis = analyze(gt, results, **options)
    if sources:
        analysis["settings"]["sources"] = {key: str(value) for key, value in sources.items()}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    analysis["files"] = write_plots(analysis, output_dir)
    write_report(analysis, output_dir)
    return analysis


