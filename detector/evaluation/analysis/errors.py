"""TIDE's error kinds (Bolya et al., ECCV 2020) for every false positive and missed object.

First each image is matched the COCO way at the foreground IoU (matching.py), per
category, best score first: matched detections are true positives, detections matched
to a crowd region are ignored (COCO neither rewards nor punishes them), and every other
considered detection is a false positive. With IoU_same / IoU_other the largest IoU of
that detection with a real (non-crowd) object of its own / of another category, and fg,
bg the foreground and background thresholds (0.5 and 0.1 by default), each false
positive gets the first kind that applies, in the order and with the bounds of TIDE's
reference implementation (tidecv 1.0.1, quantify.py):

    loc    bg <= IoU_same <= fg                      right class, poorly placed
    cls    IoU_other >= fg                           well placed, wrong class
    dupe   IoU >= fg with an object of its class that a higher-scoring detection already took
    bkg    IoU <= bg with every object               fired on background
    both   everything else, i.e. wrong class and bg < IoU_other < fg

(IoU_same == fg can only happen with an object already taken -- a free one would have been
matched -- and TIDE calls that loc, not dupe; both remove the detection when fixed.)

TIDE also gives a kind to the detections it ignores on crowd regions: they are not in the
AP, but a cls or loc error among them still points at an object, and fixing it would turn
the detection into a true positive. Those kinds are kept apart (`ignored_kind`,
`ignored_target`) so that the counts of false positives stay those of COCO's AP.

A non-crowd object that no detection matched is *missed* -- unless a cls or loc error
(of a considered or an ignored detection) points at it (TIDE: "not already covered by
classification or localization error"): fixing that error would find it, so counting it
as missed too would count it twice. Those objects are reported as `covered`;
matched + missed + covered = non-crowd objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.evaluation.analysis.inputs import AnalysisInputs
from detector.evaluation.analysis.matching import UNMATCHED, coco_greedy_match

TIDE_FG_IOU = 0.5
TIDE_BG_IOU = 0.1

# The error kinds in TIDE's reporting order; the first five are false positives.
ERROR_KINDS = ("cls", "loc", "both", "dupe", "bkg", "missed")
FP_KINDS = ("cls", "loc", "both", "dupe", "bkg")
ERROR_NAMES = {
    "cls": "classification",
    "loc": "localization",
    "both": "classification + localization",
    "dupe": "duplicate",
    "bkg": "background",
    "missed": "missed",
}
# Detection kinds besides the errors: true positive, ignored (on a crowd region),
# and not considered (beyond COCO's max_dets for its image and category).
TP, IGNORED, NOT_CONSIDERED = "tp", "ignored", "not_considered"
# Ground-truth states.
GT_MATCHED, GT_MISSED, GT_COVERED, GT_CROWD = "matched", "missed", "covered", "crowd"


@dataclass
class ErrorTable:
    """Per detection (index into results) and per annotation (index into annotations)."""

    det_kind: np.ndarray     # [D] object: tp / ignored / not_considered / one of FP_KINDS
    det_target: np.ndarray   # [D] annotation the kind refers to (matched / nearest relevant object), -1 if none
    det_iou: np.ndarray      # [D] IoU with det_target (0 if none)
    gt_state: np.ndarray     # [G] object: matched / missed / covered / crowd
    gt_det: np.ndarray       # [G] index of the matching detection, -1 if none
    fg_iou: float
    bg_iou: float
    ignored_kind: np.ndarray | None = None    # [D] for IGNORED detections: TIDE's kind (one of FP_KINDS)
    ignored_target: np.ndarray | None = None  # [D] for IGNORED detections: that kind's object, -1 if none

    def count(self, kind: str) -> int:
        if kind == "missed":
            return int(np.sum(self.gt_state == GT_MISSED))
        return int(np.sum(self.det_kind == kind))


def _max_and_arg(values: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    masked = np.where(mask, values, -1.0)
    if masked.size == 0 or masked.max() < 0:
        return 0.0, UNMATCHED
    arg = int(np.argmax(masked))
    return float(masked[arg]), arg


def _tide_kind(iou_row: np.ndarray, same: np.ndarray, other: np.ndarray, taken: np.ndarray, real: np.ndarray,
               fg_iou: float, bg_iou: float) -> tuple[str, int]:
    """TIDE's kind of one unmatched detection and the column of the object it refers to."""
    same_iou, same_col = _max_and_arg(iou_row, same)
    other_iou, other_col = _max_and_arg(iou_row, other)
    used_iou, used_col = _max_and_arg(iou_row, same & taken)
    any_iou, _ = _max_and_arg(iou_row, real)
    if bg_iou <= same_iou <= fg_iou:
        return "loc", same_col
    if other_iou >= fg_iou:
        return "cls", other_col
    if used_iou >= fg_iou:
        return "dupe", used_col
    if any_iou <= bg_iou:
        return "bkg", UNMATCHED
    return "both", other_col


def classify_errors(inputs: AnalysisInputs, fg_iou: float = TIDE_FG_IOU, bg_iou: float = TIDE_BG_IOU) -> ErrorTable:
    if not 0.0 < bg_iou < fg_iou <= 1.0:
        raise ValueError(f"need 0 < background IoU ({bg_iou}) < foreground IoU ({fg_iou}) <= 1")
    num_det, num_gt = len(inputs.det_scores), len(inputs.gt_labels)
    det_kind = np.full(num_det, NOT_CONSIDERED, dtype=object)
    det_target = np.full(num_det, UNMATCHED, dtype=np.int64)
    det_iou = np.zeros(num_det, dtype=np.float64)
    gt_state = np.where(inputs.gt_crowd, GT_CROWD, GT_MISSED).astype(object)
    gt_det = np.full(num_gt, UNMATCHED, dtype=np.int64)
    ignored_kind = np.full(num_det, "", dtype=object)
    ignored_target = np.full(num_det, UNMATCHED, dtype=np.int64)

    for group in inputs.images:
        dets, gts = group.det, group.gt
        if len(dets) == 0:
            continue
        det_labels, gt_labels = inputs.det_labels[dets], inputs.gt_labels[gts]
        crowd = inputs.gt_crowd[gts]
        iou = inputs.iou(dets, gts, crowd)  # by box, or by mask for segm

        # 1. COCO matching, one category at a time.
        match = np.full(len(dets), UNMATCHED, dtype=np.int64)   # column in this image
        ignored = np.zeros(len(dets), dtype=bool)
        for label in np.unique(det_labels):
            rows = np.flatnonzero(det_labels == label)
            cols = np.flatnonzero(gt_labels == label)
            if len(cols) == 0:
                continue
            sub_match, sub_ignored = coco_greedy_match(iou[np.ix_(rows, cols)], crowd[cols], fg_iou)
            hit = sub_match != UNMATCHED
            match[rows[hit]] = cols[sub_match[hit]]
            ignored[rows] = sub_ignored
        taken = np.zeros(len(gts), dtype=bool)
        taken[match[(match != UNMATCHED) & ~ignored]] = True

        # 2. TIDE's kinds for the false positives (and for the ignored detections, which
        # TIDE classifies too); crowd regions are not objects.
        real = ~crowd
        for row, det in enumerate(dets):
            if match[row] != UNMATCHED and not ignored[row]:
                col = match[row]
                det_kind[det], det_target[det], det_iou[det] = TP, gts[col], iou[row, col]
                gt_state[gts[col]], gt_det[gts[col]] = GT_MATCHED, det
                continue
            kind, col = _tide_kind(iou[row], real & (gt_labels == det_labels[row]),
                                   real & (gt_labels != det_labels[row]), taken, real, fg_iou, bg_iou)
            target = gts[col] if col != UNMATCHED else UNMATCHED
            if ignored[row]:
                det_kind[det], det_target[det], det_iou[det] = IGNORED, gts[match[row]], iou[row, match[row]]
                ignored_kind[det], ignored_target[det] = kind, target
                continue
            det_kind[det] = kind
            if col != UNMATCHED:
                det_target[det], det_iou[det] = target, iou[row, col]

    # 3. A free object that a cls or loc error points at is covered, not missed.
    pointing = np.isin(det_kind, ("cls", "loc"))
    targets = np.concatenate([det_target[pointing], ignored_target[np.isin(ignored_kind, ("cls", "loc"))]])
    for target in targets:
        if gt_state[target] == GT_MISSED:
            gt_state[target] = GT_COVERED
    return ErrorTable(det_kind, det_target, det_iou, gt_state, gt_det, float(fg_iou), float(bg_iou),
                      ignored_kind, ignored_target)
