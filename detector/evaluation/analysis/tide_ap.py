"""dAP the way TIDE's reference implementation (tidecv 1.0.1) computes it -- the default.

TIDE does not re-run COCOeval after fixing an error: it keeps one list of data points
(score, true or false positive) per class, edits that list, and recomputes its own AP:

- per class, points sorted by descending score (stable), precision made monotone from
  the right, read at the 101 recall thresholds i/100 (the first point reaching each; 0
  beyond the last), averaged. A class with no object scores 0.
- mAP: the mean over every class that has an object *or* a data point -- unlike COCO, a
  class with detections but no object counts, with AP 0.
- the detections are the max_dets (100) best of each image, all classes together
  (prepare_inputs(..., max_dets_per="image")).

The fixes edit the points: a cls or loc error becomes a true positive of its object's
class, provided that object is free and the error is the highest-scoring cls *or* loc error
pointing at it (the others of that kind are removed; `error_fixes`); both/dupe/bkg errors
are removed; missed objects are taken off the number of objects to find. Cls and loc errors
of detections ignored on a crowd region take part (they have no point before the fix).
The special fixes: `false_positives` puts every false positive after every true positive
(scores 0 and 1), `false_negatives` takes every unmatched object off. A main error's dAP
is clipped at 0 (TIDE: negative values come from binning); the special ones are not.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from detector.evaluation.analysis.errors import FP_KINDS, GT_COVERED, GT_MATCHED, GT_MISSED, IGNORED, TP, ErrorTable
from detector.evaluation.analysis.inputs import AnalysisInputs

RECALL_POINTS = np.arange(101) / 100.0   # i / 100 exactly, as TIDE (np.linspace differs in the last bit)


def error_fixes(inputs: AnalysisInputs, table: ErrorTable, kind: str) -> dict[int, int]:
    """{detection: object it becomes a true positive of, or -1 to remove it} for every
    cls or loc error of `kind`, ignored detections included.

    TIDE lets one error per free object be fixed: the highest-scoring cls or loc error
    pointing at it (the first one in score order on equal scores); an error whose object
    a detection already matched would be a duplicate, so it is removed."""
    if kind not in ("cls", "loc"):
        raise ValueError(f"only cls and loc errors are fixed into true positives, not '{kind}'")
    best: dict[int, int] = {}
    errors: list[tuple[int, int, str]] = []
    for group in inputs.images:
        for det in group.det:   # best score first
            if table.det_kind[det] == IGNORED:
                error, target = table.ignored_kind[det], table.ignored_target[det]
            else:
                error, target = table.det_kind[det], table.det_target[det]
            if error not in ("cls", "loc") or table.gt_state[target] == GT_MATCHED:
                if error == kind:
                    errors.append((int(det), -1, error))
                continue
            best.setdefault(int(target), int(det))
            errors.append((int(det), int(target), error))
    return {det: (target if target >= 0 and best[target] == det else -1)
            for det, target, error in errors if error == kind}


def class_ap(scores: np.ndarray, true_positive: np.ndarray, num_objects: int) -> float:
    """TIDE's AP of one class (a fraction): 101-point interpolated precision."""
    if num_objects == 0 or len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(true_positive, dtype=bool)[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    precision = tp / (tp + fp)
    recall = tp / num_objects
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    reached = index < len(precision)
    values = np.where(reached, precision[np.minimum(index, len(precision) - 1)], 0.0)
    return float(np.mean(values))


def mean_ap(labels: np.ndarray, scores: np.ndarray, true_positive: np.ndarray, objects: dict[int, int]) -> float:
    """TIDE's mAP: mean class AP over the classes with objects or data points."""
    classes = {c for c, n in objects.items() if n != 0} | {int(c) for c in np.unique(labels)}
    if not classes:
        return 0.0
    aps = []
    for c in sorted(classes):
        own = labels == c
        aps.append(class_ap(scores[own], true_positive[own], objects.get(c, 0)))
    return float(np.mean(aps))


def tide_gains(inputs: AnalysisInputs, table: ErrorTable, oracles: tuple[str, ...]) -> tuple[float, dict[str, dict]]:
    """(TIDE's AP at the table's fg IoU, {oracle: {"ap", "dap"}}), fractions."""
    # The data points in TIDE's order: each image, best score first.
    dets = np.concatenate([group.det for group in inputs.images] + [np.zeros(0, dtype=np.int64)]).astype(np.int64)
    kinds = table.det_kind[dets]
    labels = inputs.det_labels[dets].astype(np.int64)
    scores = inputs.det_scores[dets].astype(np.float64)
    in_ap = kinds != IGNORED
    objects: dict[int, int] = defaultdict(int)
    missed: dict[int, int] = defaultdict(int)
    unmatched: dict[int, int] = defaultdict(int)
    for label, crowd, state in zip(inputs.gt_labels, inputs.gt_crowd, table.gt_state):
        if crowd:
            continue
        objects[int(label)] += 1
        missed[int(label)] += int(state == GT_MISSED)
        unmatched[int(label)] += int(state in (GT_MISSED, GT_COVERED))

    base = mean_ap(labels[in_ap], scores[in_ap], kinds[in_ap] == TP, objects)
    gains = {}
    for oracle in oracles:
        ap = _fixed_ap(oracle, inputs, table, dets, kinds, labels, scores, in_ap, objects, missed, unmatched)
        dap = ap - base
        gains[oracle] = {"ap": ap, "dap": max(dap, 0.0) if oracle in FP_KINDS + ("missed",) else dap}
    return base, gains


def _fixed_ap(oracle, inputs, table, dets, kinds, labels, scores, in_ap, objects, missed, unmatched) -> float:
    is_tp = kinds == TP
    keep = in_ap.copy()
    labels = labels.copy()
    if oracle in ("cls", "loc"):
        fixes = error_fixes(inputs, table, oracle)
        for row, det in enumerate(dets):
            target = fixes.get(int(det))
            if target is None:
                continue
            keep[row] = target >= 0
            if target >= 0:
                labels[row], is_tp[row] = inputs.gt_labels[target], True
    elif oracle in ("both", "dupe", "bkg"):
        keep &= kinds != oracle
    elif oracle == "missed":
        objects = {c: n - missed[c] for c, n in objects.items()}
    elif oracle == "false_negatives":
        objects = {c: n - unmatched[c] for c, n in objects.items()}
    elif oracle == "false_positives":
        scores = is_tp.astype(np.float64)
    else:
        raise ValueError(f"unknown oracle '{oracle}'")
    # TIDE lists the errors (fixed or not) before the true positives it adds back; the
    # order matters only between equal scores.
    was_tp = kinds == TP
    order = np.concatenate([np.flatnonzero(keep & ~was_tp), np.flatnonzero(keep & was_tp)])
    return mean_ap(labels[order], scores[order], is_tp[order], objects)
