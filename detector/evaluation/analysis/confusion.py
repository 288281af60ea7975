"""Detection confusion matrix at one IoU and one score threshold.

Rows are the true class, columns the predicted class; the last row and column are
"background". Only detections scoring at least `score_thresh` (and within max_dets) take
part. Each such detection lands in exactly one cell and so does each non-crowd object:

    [c, c]    a true positive of class c (COCO matching at the IoU, as in errors.py)
    [c, d]    a detection of class d on a free object of class c != d (IoU >= threshold;
              detections claim objects best score first, each the free one of highest IoU)
    [bg, d]   a detection of class d on no free object (background, poor box or duplicate)
    [c, bg]   an object of class c that no detection above the threshold claimed

Detections on crowd regions are ignored, as COCO does; [bg, bg] is always 0. Because
COCO's matching is greedy by score, the true positives among the detections above the
threshold are exactly the true positives of the full matching, so the table is reused.
"""
from __future__ import annotations

import numpy as np

from detector.evaluation.analysis.errors import TP, ErrorTable
from detector.evaluation.analysis.inputs import AnalysisInputs

DEFAULT_SCORE_THRESH = 0.5


def confusion_matrix(inputs: AnalysisInputs, table: ErrorTable, score_thresh: float = DEFAULT_SCORE_THRESH) -> np.ndarray:
    """[K+1, K+1] int64 counts, classes in inputs.category_ids order, background last."""
    index = {category_id: k for k, category_id in enumerate(inputs.category_ids)}
    background = len(inputs.category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    for group in inputs.images:
        dets = group.det[inputs.det_scores[group.det] >= score_thresh]
        kinds = table.det_kind[dets]
        real = group.gt[~inputs.gt_crowd[group.gt]]
        free = np.ones(len(real), dtype=bool)
        position = {gt: i for i, gt in enumerate(real)}
        for det in dets[kinds == TP]:
            target = table.det_target[det]
            free[position[target]] = False
            matrix[index[inputs.gt_labels[target]], index[inputs.det_labels[det]]] += 1
        # Everything else but the crowd-ignored detections, best score first.
        rest = dets[(kinds != TP) & (kinds != "ignored")]
        iou = inputs.iou(rest, real)
        for row, det in enumerate(rest):
            candidates = np.where(free, iou[row], -1.0)
            best = int(np.argmax(candidates)) if len(real) else -1
            if best >= 0 and candidates[best] >= table.fg_iou:
                free[best] = False
                matrix[index[inputs.gt_labels[real[best]]], index[inputs.det_labels[det]]] += 1
            else:
                matrix[background, index[inputs.det_labels[det]]] += 1
        for gt in real[free]:
            matrix[index[inputs.gt_labels[gt]], background] += 1
    return matrix
