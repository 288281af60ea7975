"""COCO's greedy matching of one image's detections of one category to its ground truth.

Detections are taken best score first; each takes the still-free ground truth with the
highest IoU, if that IoU reaches the threshold. Crowd regions come after all real objects
(a detection prefers any real object above the threshold) and may absorb any number of
detections: a detection matched to a crowd is *ignored* -- neither a true nor a false
positive -- exactly as in COCOeval. Equal IoUs go to the later ground truth, as there.
"""
from __future__ import annotations

import numpy as np

UNMATCHED = -1


def coco_greedy_match(iou: np.ndarray, gt_crowd: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Match detections (rows of `iou`, already sorted by descending score) to ground truth.

    Returns (det_match [D]: column of the matched ground truth or -1, det_ignored [D]: matched
    to a crowd region). Columns keep their meaning; crowd columns are visited last.
    """
    iou = np.asarray(iou, dtype=np.float64)
    num_det, num_gt = iou.shape
    crowd = np.asarray(gt_crowd, dtype=bool)
    # COCOeval's visiting order: real objects first, crowd regions after (stable).
    order = np.argsort(crowd, kind="mergesort")
    gt_taken = np.zeros(num_gt, dtype=bool)
    det_match = np.full(num_det, UNMATCHED, dtype=np.int64)
    det_ignored = np.zeros(num_det, dtype=bool)
    threshold = min(threshold, 1 - 1e-10)
    for d in range(num_det):
        best_iou, best = threshold, UNMATCHED
        for g in order:
            if gt_taken[g] and not crowd[g]:
                continue
            # Already holding a real object and only crowd regions remain: keep it.
            if best != UNMATCHED and not crowd[best] and crowd[g]:
                break
            if iou[d, g] < best_iou:
                continue
            best_iou, best = iou[d, g], g
        if best == UNMATCHED:
            continue
        det_match[d] = best
        det_ignored[d] = crowd[best]
        gt_taken[best] = True
    return det_match, det_ignored
