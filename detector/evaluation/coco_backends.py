"""The two interchangeable COCO backends: faster-coco-eval (C++ matching and accumulation, the
default) and the reference pycocotools, behind one call, `run_backend`, returning the same
numbers from either.

Both print progress and change the records they are given; they get fresh copies and a
silenced stdout here, so callers (the evaluator, the error analysis) never see either.
"""
from __future__ import annotations

import contextlib
import gc
import io
from typing import Sequence

import numpy as np

from detector.evaluation.coco_checks import OPTIONAL_RESULT_KEYS, RESULT_KEYS, EvaluationError, check_iou_type

BACKENDS = ("faster_coco_eval", "pycocotools")
# The order of COCOeval.stats: 6 AP numbers then 6 AR numbers.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# For keypoints COCOeval reports 10 numbers at its one maxDets (20): no small objects (a person
# under 32x32 pixels has no keypoints to speak of), and AR at IoU 0.5 and 0.75 instead of per maxDets.
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def stat_names(iou_type: str) -> tuple[str, ...]:
    """The names of COCOeval.stats, in order, for this IoU type."""
    return KEYPOINT_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES


def _copy_records(records: list[dict]) -> list[dict]:
    return [dict(record) for record in records]


def _result_copies(results: list[dict], iou_type: str) -> list[dict]:
    keys = RESULT_KEYS[iou_type]
    optional = OPTIONAL_RESULT_KEYS[iou_type]
    copies = [{**{key: det[key] for key in keys}, **{key: det[key] for key in optional if key in det}}
              for det in results]
    if iou_type == "segm":
        # An RLE's size may come as a tuple; a str counts is what both libraries expect.
        for det in copies:
            det["segmentation"] = dict(det["segmentation"])
    return copies


def run_backend(backend: str, gt: dict, results: list[dict], image_ids: Sequence[int] | None,
                iou_type: str = "bbox", keypoint_sigmas: Sequence[float] | None = None):
    """Return (stats, precision array [T, R, K, A, M], category ids in K order): 12 stats
    (STAT_NAMES), or 10 for keypoints (KEYPOINT_STAT_NAMES), compared by OKS with
    `keypoint_sigmas` (one per keypoint; None: both libraries' default, COCO's 17 person sigmas)."""
    check_iou_type(iou_type)
    if backend not in BACKENDS:
        raise EvaluationError(f"Unknown evaluator '{backend}'; test.evaluator must be one of {BACKENDS}.")
    # Both libraries print progress and mutate their inputs (loadRes adds ids and areas to each
    # record, index building adds fields): they get fresh records. Copying the records alone
    # is enough -- nothing replaces items inside a box or a polygon -- and a deep copy of a
    # large results list cost several times the evaluation itself.
    results = _result_copies(results, iou_type)
    # Matching builds millions of small Python objects; the cyclic garbage collector would
    # rescan all of them again and again (half the evaluation time). Nothing here makes cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _evaluate_with(backend, gt, results, image_ids, iou_type, keypoint_sigmas)
    finally:
        if gc_was_enabled:
            gc.enable()


def _evaluate_with(backend: str, gt: dict, results: list[dict], image_ids: Sequence[int] | None, iou_type: str,
                   keypoint_sigmas: Sequence[float] | None = None):
    gt = {**gt, **{key: _copy_records(gt[key]) for key in ("images", "annotations", "categories") if key in gt}}
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "faster_coco_eval":
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt = COCO(gt)
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *a, **k: None)
        else:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        if keypoint_sigmas is not None:
            # Both libraries read the sigmas from params at matching time (computeOks).
            evaluator.params.kpt_oks_sigmas = np.asarray(keypoint_sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(value) for value in np.asarray(evaluator.stats)[: len(stat_names(iou_type))]]
    return stats, np.asarray(evaluator.eval["precision"]), list(evaluator.params.catIds)
