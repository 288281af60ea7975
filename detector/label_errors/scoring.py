"""How likely each suspect is a real label error: cleanlab's object-detection scores.

cleanlab (`cleanlab.object_detection.rank`, ObjectLab: Tkachenko et al. 2023) scores every given
box and every confident prediction from 0 (surely wrong) to 1 (fine), from the similarity of
boxes (IoU and centre distance) and the predictions' confidence:

    compute_overlooked_box_scores   per prediction: how well the labels explain it (missing)
    compute_swap_box_scores         per given box: how little an other-class prediction covers it (wrong_class)
    compute_badloc_box_scores       per given box: how well the best same-class prediction fits it (loose)
    get_label_quality_scores        per image: the three pooled (the gallery shows it)

cleanlab's thresholds for a confident prediction (0.95, 0.5) are set to `confident_score`, the
threshold of the kinds (kinds.py), so both read the same predictions. cleanlab has no score for a
box on nothing; its quality here is the best `score x IoU` of any prediction on the box.

A suspect's score (higher = more likely an error) is `(1 - quality) x confidence`: cleanlab's
disagreement weighted by how much the model's word is worth there -- the prediction's score for
missing, wrong_class and loose; for spurious the model's recall of that class on these images
(the share of its given boxes that a confident prediction matched), since a model that finds
most boxes of a class makes a box it does not see there suspicious, and one that finds few
does not.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from detector.evaluation.analysis.box_iou import coco_box_iou, coco_to_xyxy
from detector.label_errors.kinds import Candidate, indices_by_image, judged


class MissingCleanlabError(ImportError):
    """cleanlab is not installed; the message says how to install it."""


def require_cleanlab() -> None:
    """Fail at once, before any training, when cleanlab is missing."""
    try:
        import cleanlab.object_detection.rank  # noqa: F401
    except ImportError as error:
        raise MissingCleanlabError(f"detector-find-label-errors needs cleanlab ({error}): pip install 'detector[labels]' "
                                   "(or pip install -e '.[labels]' in a checkout, or pip install cleanlab)") from None


def cleanlab_inputs(coco: dict, results: list[dict]):
    """(image ids, labels, predictions, box index, prediction index) in cleanlab's format:
    labels[i] = {"bboxes": [L, 4] xyxy, "labels": [L] 0..K-1} (judged boxes only); predictions[i]
    = one [M, 5] array (x1, y1, x2, y2, score) per class. box index[i][l] is the annotation
    (position in coco["annotations"]) of labels[i]'s box l; prediction index[i][m] the result
    of cleanlab's m-th prediction of image i (cleanlab reads them class after class)."""
    category_ids = [int(c["id"]) for c in coco["categories"]]
    column = {cid: k for k, cid in enumerate(category_ids)}
    image_ids = [int(image["id"]) for image in coco["images"]]
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    boxes = [[] for _ in image_ids]
    for index, ann in enumerate(coco["annotations"]):
        if judged(ann):
            boxes[position[int(ann["image_id"])]].append(index)
    dets = [[[] for _ in category_ids] for _ in image_ids]
    for index, result in enumerate(results):
        dets[position[int(result["image_id"])]][column[int(result["category_id"])]].append(index)
    labels, predictions, prediction_index = [], [], []
    for i in range(len(image_ids)):
        anns = [coco["annotations"][a] for a in boxes[i]]
        labels.append({"bboxes": coco_to_xyxy([a["bbox"] for a in anns]),
                       "labels": np.asarray([column[int(a["category_id"])] for a in anns], dtype=np.int64)})
        per_class = []
        order = []
        for k in range(len(category_ids)):
            rows = sorted(dets[i][k], key=lambda d: -float(results[d]["score"]))
            scores = np.asarray([float(results[d]["score"]) for d in rows], dtype=np.float64).reshape(-1, 1)
            per_class.append(np.concatenate([coco_to_xyxy([results[d]["bbox"] for d in rows]), scores], axis=1))
            order.extend(rows)
        predictions.append(per_class)
        prediction_index.append(order)
    return image_ids, labels, predictions, boxes, prediction_index


@contextlib.contextmanager
def _quiet():
    """cleanlab prints and warns about pruning; the tool logs its own summary instead."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _similarities(labels: list[dict], predictions: list[list[np.ndarray]]) -> list[dict] | None:
    """cleanlab's per-image box similarities (IoU and distance matrices, the dataset's smallest
    similarity), made once for the three box scores: each would otherwise make them itself, and
    they are most of the scoring's time (a Python loop per box pair). The helper is cleanlab's own
    (what its documented `auxiliary_inputs` hold); None where a cleanlab version lacks it, and
    each score then makes its own, with the same values."""
    try:
        from cleanlab.internal.constants import ALPHA   # the similarity weighting the scores use by default
        from cleanlab.object_detection.rank import _get_valid_inputs_for_compute_scores
    except ImportError:
        return None
    return _get_valid_inputs_for_compute_scores(ALPHA, labels, predictions)


def box_qualities(coco: dict, results: list[dict], confident_score: float) -> dict:
    """cleanlab's per-box qualities, keyed for the candidates: {"overlooked": {result: q},
    "swap": {annotation: q}, "badloc": {annotation: q}, "image": {image_id: q}}."""
    from cleanlab.object_detection.rank import (
        compute_badloc_box_scores,
        compute_overlooked_box_scores,
        compute_swap_box_scores,
        get_label_quality_scores,
    )

    image_ids, labels, predictions, boxes, prediction_index = cleanlab_inputs(coco, results)
    with _quiet():
        shared = _similarities(labels, predictions)
        overlooked = compute_overlooked_box_scores(labels=labels, predictions=predictions,
                                                   high_probability_threshold=confident_score, auxiliary_inputs=shared)
        swap = compute_swap_box_scores(labels=labels, predictions=predictions,
                                       high_probability_threshold=confident_score, auxiliary_inputs=shared)
        badloc = compute_badloc_box_scores(labels=labels, predictions=predictions,
                                           low_probability_threshold=confident_score, auxiliary_inputs=shared)
        image = get_label_quality_scores(labels, predictions, verbose=False)
    qualities = {"overlooked": {}, "swap": {}, "badloc": {}, "image": {}}
    for i, image_id in enumerate(image_ids):
        qualities["image"][image_id] = float(image[i])
        for m, result in enumerate(prediction_index[i]):
            qualities["overlooked"][result] = float(overlooked[i][m])
        for l, annotation in enumerate(boxes[i]):
            qualities["swap"][annotation] = float(swap[i][l])
            qualities["badloc"][annotation] = float(badloc[i][l])
    return qualities


def class_recall(coco: dict, gt_matched: np.ndarray) -> dict[int, float]:
    """Per category id: the share of its judged boxes a confident same-class prediction matched."""
    found: dict[int, list[bool]] = {}
    for index, ann in enumerate(coco["annotations"]):
        if judged(ann):
            found.setdefault(int(ann["category_id"]), []).append(bool(gt_matched[index]))
    return {cid: float(np.mean(v)) for cid, v in found.items()}


def score_candidates(coco: dict, results: list[dict], candidates: list[Candidate], qualities: dict,
                     recall: dict[int, float]) -> list[float]:
    """Each candidate's score (module docstring), in [0, 1]."""
    annotations = coco["annotations"]
    by_image = indices_by_image(results)
    judged_by_image = indices_by_image(annotations, keep=judged)
    scores = []
    for c in candidates:
        if c.kind == "spurious":
            ann = annotations[c.annotation]
            dets = by_image.get(c.image_id, [])
            quality = 0.0
            if dets:
                iou = coco_box_iou([results[d]["bbox"] for d in dets], [ann["bbox"]])[:, 0]
                quality = float(np.max(iou * np.asarray([float(results[d]["score"]) for d in dets])))
            confidence = recall.get(int(ann["category_id"]), 0.0)
        else:
            confidence = float(results[c.prediction]["score"])
            if c.kind == "missing":
                quality = qualities["overlooked"].get(c.prediction, float("nan"))
                if not np.isfinite(quality):
                    # cleanlab leaves out a prediction that touches any given box; ours overlap
                    # none above near_iou: their best IoU stands for the similarity.
                    same_image = [annotations[a]["bbox"] for a in judged_by_image.get(c.image_id, [])]
                    quality = float(coco_box_iou([results[c.prediction]["bbox"]], same_image).max()) if same_image else 0.0
            else:
                quality = qualities["swap" if c.kind == "wrong_class" else "badloc"][c.annotation]
        scores.append(float(np.clip((1.0 - quality) * confidence, 0.0, 1.0)))
    return scores
