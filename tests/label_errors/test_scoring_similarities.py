"""The box qualities computed from cleanlab's similarities made once are the ones each cleanlab
score makes for itself (the shared inputs are a saving, never a change of value)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cleanlab")

from detector.label_errors.scoring import box_qualities, cleanlab_inputs  # noqa: E402
from tests.label_errors.test_suspects import dataset  # noqa: E402


def test_shared_similarities_give_each_scores_own_values():
    from cleanlab.object_detection.rank import (
        compute_badloc_box_scores,
        compute_overlooked_box_scores,
        compute_swap_box_scores,
    )

    coco, results = dataset()
    qualities = box_qualities(coco, results, confident_score=0.5)
    image_ids, labels, predictions, boxes, prediction_index = cleanlab_inputs(coco, results)
    overlooked = compute_overlooked_box_scores(labels=labels, predictions=predictions, high_probability_threshold=0.5)
    swap = compute_swap_box_scores(labels=labels, predictions=predictions, high_probability_threshold=0.5)
    badloc = compute_badloc_box_scores(labels=labels, predictions=predictions, low_probability_threshold=0.5)
    for i in range(len(image_ids)):
        np.testing.assert_array_equal([qualities["overlooked"][r] for r in prediction_index[i]], overlooked[i])
        np.testing.assert_array_equal([qualities["swap"][a] for a in boxes[i]], swap[i])
        np.testing.assert_array_equal([qualities["badloc"][a] for a in boxes[i]], badloc[i])
    # Not vacuous: the damaged image has scores below 1 of each kind.
    assert min(swap[1]) < 1 and min(badloc[1]) < 1 and np.nanmin(overlooked[1]) < 1
