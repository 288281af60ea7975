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

from detector.evaluation.coco_checks import RESULT_KEYS, EvaluationError, check_iou_type

BACKENDS = ("faster_coco_eval", "pycocotools")
# The order of COCOeval.stats: 6 AP numbers then 6 AR numbers.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _copy_records(records: list[dict]) -> list[dict]:
    return [dict(record) for record in records]


def _result_copies(results: list[dict], iou_type: str) -> list[dict]:
    keys = RESULT_KEYS[iou_type]
    copies = [{key: det[key] for key in keys} for det in results]
    if iou_type == "segm":
        # An RLE's size may come as a tuple; a str counts is what both libraries expect.
        for det in copies:
            det["segmentation"] = dict(det["segmentation"])
    return copies


def run_backend(backend: str, gt: dict, results: list[dict], image_ids: Sequence[int] | None,
                iou_type: str = "bbox"):
    """Return (stats[12], precision array [T, R, K, A, M], category ids in K order)."""
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
        return _evaluate_with(backend, gt, results, image_ids, iou_type)
    finally:
        if gc_was_enabled:
            gc.enable()


def _evaluate_with(backend: str, gt: dict, results: list[dict], image_ids: Sequence[int] | None, iou_type: str):
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
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(value) for value in np.asarray(evaluator.stats)[: len(STAT_NAMES)]]
    return stats, np.asarray(evaluator.eval["precision"]), list(evaluator.params.catIds)
