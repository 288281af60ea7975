"""TIDE's oracles re-evaluated with COCOeval (`dap_evaluator="coco"`, not the default).

The default dAP numbers are TIDE's own (tide_ap.py, tidecv 1.0.1's values). This variant
edits a copy of the detections (or of the ground truth) the same way and recomputes the AP
at the foreground IoU with COCOeval (coco_metrics.py), so the numbers are on the scale of
tools/evaluate.py's AP50 (COCO averages over the classes with objects only, keeps 100
detections per image *and class*, and re-matches the fixed detections):

    cls     give the detection the class of the object it overlaps (IoU >= fg); box unchanged
    loc     move the detection's box (and mask, for segm) onto its object (the same-class
            object of highest IoU)
    both    remove the detection (it is unclear which of the two to fix)
    dupe    remove the detection
    bkg     remove the detection
    missed  TIDE's recall fix: remove the missed objects from the ground truth, i.e. lower
            the number of objects to find (adding detections would need invented scores)

Which cls/loc errors are fixed follows TIDE (tide_ap.error_fixes): per free object, the
highest-scoring cls *or* loc error pointing at it; the other errors of the kind being fixed
are removed, as are those whose object is already taken (they would be duplicates). Errors
of detections ignored on a crowd region take part too.
Two further oracles from TIDE bound what is possible: `false_positives` removes every
false positive (perfect precision) and `false_negatives` removes every unmatched object
from the ground truth (perfect recall). dAP values are reported as computed, not clipped.
"""
from __future__ import annotations

import copy

import numpy as np

from detector.evaluation.analysis.coco_metrics import box_metrics
from detector.evaluation.analysis.errors import ERROR_KINDS, FP_KINDS, GT_MISSED, ErrorTable
from detector.evaluation.analysis.inputs import AnalysisInputs
from detector.evaluation.analysis.tide_ap import error_fixes

SPECIAL_ORACLES = ("false_positives", "false_negatives")
ORACLES = ERROR_KINDS + SPECIAL_ORACLES


def _fix_to_true_positive(kind: str, gt: dict, results: list[dict], inputs: AnalysisInputs,
                          table: ErrorTable) -> list[dict]:
    annotations = gt["annotations"]
    fixed = list(results)
    for det, target in error_fixes(inputs, table, kind).items():
        if target < 0:
            fixed[det] = None   # not the one error fixed for its object, or a duplicate
            continue
        det_copy = dict(results[det])
        if kind == "cls":
            det_copy["category_id"] = annotations[target]["category_id"]
        else:
            det_copy["bbox"] = list(annotations[target]["bbox"])
            if inputs.iou_type == "segm":  # the mask is what segm compares: it moves onto the object too
                rle = inputs.gt_masks[target]
                det_copy["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"]}
        fixed[det] = det_copy
    return [det for det in fixed if det is not None]


def apply_oracle(oracle: str, gt: dict, results: list[dict], inputs: AnalysisInputs, table: ErrorTable) -> tuple[dict, list[dict]]:
    """The ground truth and detections with one kind of error fixed (inputs are not modified)."""
    if oracle not in ORACLES:
        raise ValueError(f"unknown oracle '{oracle}'; choose from {ORACLES}")
    if oracle in ("cls", "loc"):
        return gt, _fix_to_true_positive(oracle, gt, results, inputs, table)
    if oracle in FP_KINDS or oracle == "false_positives":
        drop = set(FP_KINDS) if oracle == "false_positives" else {oracle}
        return gt, [det for det, kind in zip(results, table.det_kind) if kind not in drop]
    remove = table.gt_state == GT_MISSED
    if oracle == "false_negatives":
        remove = remove | np.isin(table.gt_state, ("covered",))
    fixed_gt = copy.copy(gt)
    fixed_gt["annotations"] = [ann for ann, gone in zip(gt["annotations"], remove) if not gone]
    return fixed_gt, results


def oracle_gains(gt: dict, results: list[dict], inputs: AnalysisInputs, table: ErrorTable, base_ap: float | None,
                 backend: str = "faster_coco_eval", oracles: tuple[str, ...] = ORACLES) -> dict[str, dict]:
    """{oracle: {"ap": AP at fg IoU after the fix, "dap": gain over base_ap}}."""
    gains = {}
    for oracle in oracles:
        fixed_gt, fixed_results = apply_oracle(oracle, gt, results, inputs, table)
        ap = box_metrics(fixed_gt, fixed_results, backend, inputs.iou_type).ap(iou=table.fg_iou)
        dap = None if ap is None or base_ap is None else ap - base_ap
        gains[oracle] = {"ap": ap, "dap": dap}
    return gains
