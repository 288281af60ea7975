"""What kind of mistake each suspect box is, from the matching the error analysis uses.

The confident predictions of every image (score >= confident_score) are matched to the given
boxes exactly as detector-analyze matches them (COCO's greedy matching, then TIDE's error kinds:
detector/evaluation/analysis/errors.py), with TIDE's foreground IoU at `good_iou` and its
background IoU at `near_iou`. A prediction the model is sure of that the labels do not explain
points at a label the model disagrees with:

    missing      TIDE "bkg": a confident prediction with no given box of any class over it
                 (IoU <= near_iou with all of them): a box left out. Also a confident prediction
                 TIDE calls "loc" or "both" that overlaps given boxes below separate_iou when each
                 of those boxes has its own object (another prediction of its class on it at
                 good_iou, score >= spurious_score): an unlabelled object beside labelled ones
    wrong_class  TIDE "cls": a confident prediction of another class on a given box (IoU >= good_iou)
                 that no surer prediction of its own class matched: its class was swapped
    loose        TIDE "loc": the best same-class prediction overlaps a given box at
                 near_iou..good_iou and no prediction of its class sits on the box (at good_iou,
                 score >= spurious_score): drawn loose or off the object
    spurious     a given box that no prediction of any class (score >= spurious_score, all classes)
                 overlaps above near_iou: a box on nothing

Crowd regions and VOC difficult boxes are not judged: they are never suspects, and a prediction
lying on one (half its area or more) is not a missing box. One given box gets one suspect at most
(the surer one); confident predictions of one unlabelled object (two classes, or NMS leftovers)
give one missing suspect (the surest; others overlapping it at missing_merge_iou or more are merged).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from detector.evaluation.analysis.box_iou import coco_box_iou
from detector.evaluation.analysis.errors import GT_MATCHED, classify_errors
from detector.evaluation.analysis.inputs import prepare_inputs

KINDS = ("missing", "wrong_class", "loose", "spurious")


@dataclass
class Candidate:
    """One suspect before scoring: the kind, the given annotation (index into the annotations,
    or -1 for missing) and the prediction that names it (index into the results, or -1)."""

    kind: str
    image_id: int
    annotation: int
    prediction: int


def judged(annotation: dict) -> bool:
    """Whether a given box is judged: crowd regions and VOC difficult boxes are not."""
    return not annotation.get("iscrowd", 0) and not annotation.get("difficult", 0)


def find_candidates(coco: dict, results: list[dict], *, confident_score: float, good_iou: float, near_iou: float,
                    spurious_score: float, missing_merge_iou: float, separate_iou: float
                    ) -> tuple[list[Candidate], np.ndarray]:
    """The suspects of `coco` (annotations) against `results` (COCO results, all scores), by kind,
    and per annotation whether a confident prediction of its class matched it."""
    annotations = coco["annotations"]
    # Crowd and difficult boxes both stand as regions the matching ignores (iscrowd=1).
    matching_gt = dict(coco, annotations=[dict(a, iscrowd=0 if judged(a) else 1) for a in annotations])
    confident = [i for i, r in enumerate(results) if float(r["score"]) >= confident_score]
    inputs = prepare_inputs(matching_gt, [results[i] for i in confident])
    table = classify_errors(inputs, fg_iou=good_iou, bg_iou=near_iou)
    seen = _seen_by(coco, results, spurious_score, good_iou)
    judged_by_image = indices_by_image(annotations, keep=judged)

    by_gt: dict[int, Candidate] = {}
    sure: dict[int, float] = {}
    missing: list[int] = []
    for row, kind in enumerate(table.det_kind):
        det = confident[row]
        score = float(results[det]["score"])
        target = int(table.det_target[row])
        if kind == "bkg" or (kind in ("loc", "both") and _separate_object(det, annotations, judged_by_image, results,
                                                                           seen, near_iou, separate_iou)):
            missing.append(det)
            continue
        if kind not in ("cls", "loc") or target < 0:
            continue
        if kind == "loc" and (table.gt_state[target] == GT_MATCHED or seen[target] - {det}):
            continue   # the box's own object is there: this prediction is another object, not a better box
        if kind == "cls" and table.gt_state[target] == GT_MATCHED and \
                inputs.det_scores[int(table.gt_det[target])] >= score:
            continue   # a prediction of the box's own class matched it, at least as sure
        if score > sure.get(target, -1.0):
            by_gt[target] = Candidate("wrong_class" if kind == "cls" else "loose",
                                      int(annotations[target]["image_id"]), target, det)
            sure[target] = score
    candidates = list(by_gt.values())
    candidates += _missing(coco, results, missing, missing_merge_iou)
    candidates += _spurious(coco, results, table.gt_state, spurious_score, near_iou)
    return candidates, np.asarray(table.gt_state == GT_MATCHED, dtype=bool)


def _seen_by(coco: dict, results: list[dict], min_score: float, good_iou: float) -> list[set[int]]:
    """Per annotation: the results of its class (score >= min_score) on it at IoU >= good_iou."""
    annotations = coco["annotations"]
    by_image = indices_by_image(results)
    seen: list[set[int]] = [set() for _ in annotations]
    for index, ann in enumerate(annotations):
        dets = [d for d in by_image.get(int(ann["image_id"]), []) if int(results[d]["category_id"]) ==
                int(ann["category_id"]) and float(results[d]["score"]) >= min_score]
        if judged(ann) and dets:
            iou = coco_box_iou([results[d]["bbox"] for d in dets], [ann["bbox"]])[:, 0]
            seen[index] = {d for d, v in zip(dets, iou) if v >= good_iou}
    return seen


def _separate_object(det: int, annotations: list[dict], judged_by_image: dict[int, list[int]], results: list[dict],
                     seen: list[set[int]], near_iou: float, separate_iou: float) -> bool:
    """Whether a confident prediction that overlaps given boxes (near_iou..) is an object of its
    own: each box it overlaps is on its own object -- another prediction of the box's class sits on
    it -- and it overlaps none of them at separate_iou or more. In crowded images an unlabelled object
    touches its labelled neighbours; TIDE calls such a prediction a localisation error."""
    boxes = judged_by_image.get(int(results[det]["image_id"]), [])
    if not boxes:
        return True
    iou = coco_box_iou([results[det]["bbox"]], [annotations[i]["bbox"] for i in boxes])[0]
    if iou.max() >= separate_iou:
        return False
    return all(seen[i] - {det} for i, v in zip(boxes, iou) if v > near_iou)


def indices_by_image(items: list[dict], keep: Callable[[dict], bool] | None = None) -> dict[int, list[int]]:
    """Image id -> the positions in `items` (annotations or results) of that image's items (those
    `keep` accepts), in order: grouped once, so that per-box work looks at one image's items only."""
    grouped: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        if keep is None or keep(item):
            grouped.setdefault(int(item["image_id"]), []).append(index)
    return grouped


def _missing(coco: dict, results: list[dict], dets: list[int], merge_iou: float) -> list[Candidate]:
    """One candidate per unlabelled object: off ignored regions, the surest of overlapping ones."""
    annotations = coco["annotations"]
    ignored_by_image = indices_by_image(annotations, keep=lambda ann: not judged(ann))
    kept: list[Candidate] = []
    per_image: dict[int, list[int]] = {}
    for det in sorted(dets, key=lambda d: -float(results[d]["score"])):
        image_id = int(results[det]["image_id"])
        box = np.asarray([results[det]["bbox"]], dtype=np.float64)
        regions = ignored_by_image.get(image_id, [])
        if regions:
            on_region = coco_box_iou(box, [annotations[i]["bbox"] for i in regions], np.ones(len(regions), bool))
            if on_region.max() >= 0.5:
                continue
        taken = per_image.setdefault(image_id, [])
        if taken and coco_box_iou(box, [results[d]["bbox"] for d in taken]).max() >= merge_iou:
            continue
        taken.append(det)
        kept.append(Candidate("missing", image_id, -1, det))
    return kept


def _spurious(coco: dict, results: list[dict], gt_state, min_score: float, near_iou: float) -> list[Candidate]:
    """Given boxes that the confident matching left unmatched and that no prediction comes near."""
    annotations = coco["annotations"]
    near_results = [r for r in results if float(r["score"]) >= min_score]
    results_by_image = indices_by_image(near_results)
    kept = []
    for index, ann in enumerate(annotations):
        if not judged(ann) or gt_state[index] == GT_MATCHED:
            continue
        dets = results_by_image.get(int(ann["image_id"]), [])
        if dets and coco_box_iou([near_results[d]["bbox"] for d in dets], [ann["bbox"]]).max() > near_iou:
            continue
        kept.append(Candidate("spurious", int(ann["image_id"]), index, -1))
    return kept
