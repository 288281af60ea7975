"""Counts of true positives and of each error kind per object size (COCO's small/medium/large).

Objects (true positives, missed, covered) are binned by the annotation's area, the number
COCO's size ranges use; false positives by their own area (box w * h, or mask area for
segm), which is how COCO decides whether an unmatched detection belongs to a size range. Bins: small < 32^2 <=
medium < 96^2 <= large (COCO's ranges include both ends; an area of exactly 32^2 counts
as medium here, so that every object is counted once).
"""
from __future__ import annotations

import numpy as np

from detector.evaluation.analysis.errors import FP_KINDS, GT_COVERED, GT_MATCHED, GT_MISSED, ErrorTable
from detector.evaluation.analysis.inputs import AnalysisInputs

SIZE_NAMES = ("small", "medium", "large")
SIZE_LIMITS = (32.0**2, 96.0**2)


def size_bin(area: np.ndarray) -> np.ndarray:
    """0 small, 1 medium, 2 large."""
    return np.searchsorted(np.asarray(SIZE_LIMITS), np.asarray(area, dtype=np.float64), side="right")


def size_counts(inputs: AnalysisInputs, table: ErrorTable) -> dict[str, dict[str, int]]:
    """{size: {"tp", "cls", "loc", "both", "dupe", "bkg", "missed", "covered", "objects"}}."""
    det_area = inputs.det_area if inputs.det_area is not None else inputs.det_boxes[:, 2] * inputs.det_boxes[:, 3]
    det_bins = size_bin(det_area)
    gt_bins = size_bin(inputs.gt_area)
    counts = {}
    for b, name in enumerate(SIZE_NAMES):
        row = {"tp": int(np.sum((table.gt_state == GT_MATCHED) & (gt_bins == b)))}
        for kind in FP_KINDS:
            row[kind] = int(np.sum((table.det_kind == kind) & (det_bins == b)))
        row["missed"] = int(np.sum((table.gt_state == GT_MISSED) & (gt_bins == b)))
        row["covered"] = int(np.sum((table.gt_state == GT_COVERED) & (gt_bins == b)))
        row["objects"] = int(np.sum(~inputs.gt_crowd & (gt_bins == b)))
        counts[name] = row
    return counts
