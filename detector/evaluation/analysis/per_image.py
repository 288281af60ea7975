"""Per-image recall: how many of each image's objects a detection matched (TIDE's
matching, at the foreground IoU). The images with the lowest recall are the ones to look
at first; the evaluation pictures draw them (detector/evaluation/eval_pictures.py)."""
from __future__ import annotations

import numpy as np

from detector.evaluation.analysis.errors import GT_MATCHED, ErrorTable
from detector.evaluation.analysis.inputs import AnalysisInputs


def per_image_recall(inputs: AnalysisInputs, table: ErrorTable) -> list[dict]:
    """[{"image_id", "objects", "matched", "recall"}] in image-id order; recall is None for
    an image without (non-crowd) objects."""
    rows = []
    for group in inputs.images:
        own = group.gt[~inputs.gt_crowd[group.gt]] if len(group.gt) else group.gt
        matched = int(np.sum(table.gt_state[own] == GT_MATCHED)) if len(own) else 0
        rows.append({"image_id": int(group.image_id), "objects": int(len(own)), "matched": matched,
                     "recall": matched / len(own) if len(own) else None})
    return rows


def worst_images(rows: list[dict], count: int) -> list[dict]:
    """The `count` images with objects and the lowest recall (more missed objects first on ties)."""
    with_objects = [r for r in rows if r["objects"]]
    with_objects.sort(key=lambda r: (r["recall"], -(r["objects"] - r["matched"]), r["image_id"]))
    return with_objects[: max(0, count)]
