"""dataset=shapes with keypoints: the images, boxes and segmentations are byte-identical to the
generator before keypoints (make demo's AP depends on it), and every object's four keypoints are
its polygon's extreme points, on its box's edges, hidden only where a later shape covers them."""
import hashlib
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from detector.data.shapes import KEYPOINT_NAMES, generator_params, render_image

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
# sha256 of (image bytes, [(label, box, segmentation)]) from the generator of commit 0e37e34 (version 3,
# before keypoints), default conf/dataset/shapes.yaml, rng [seed 0, split, index].
BEFORE_KEYPOINTS = {
    (0, 0): "4d23159e5200a662562f47ac7c1d00c93eab6e2e09eb8fbc05bc328bf62523cd",
    (0, 7): "369dd3c1f5cf073db815f4109b8b553f8152be4e4bc957aa1d938c85f581c4c7",
    (1, 3): "ffa9010d03f7f8cf4469da67181c976ff2225992bfc2477d9a19ccc692f8bdff",
}


@pytest.fixture(scope="module")
def params():
    return generator_params(OmegaConf.load(REPO / "conf" / "dataset" / "shapes.yaml"))


def _digest(image, objects) -> str:
    digest = hashlib.sha256(image.tobytes())
    digest.update(json.dumps([(label, list(box), seg) for label, box, seg, *_ in objects], sort_keys=True,
                             default=str).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("split_code, index", sorted(BEFORE_KEYPOINTS))
def test_images_and_boxes_are_unchanged_by_keypoints(params, split_code, index):
    image, objects = render_image(np.random.default_rng([0, split_code, index]), params, with_keypoints=True)
    assert _digest(image, objects) == BEFORE_KEYPOINTS[(split_code, index)]
    plain_image, plain_objects = render_image(np.random.default_rng([0, split_code, index]), params)
    assert np.array_equal(image, plain_image) and [o[:3] for o in objects] == plain_objects


def test_keypoints_are_the_extreme_points_on_the_box_edges(params):
    hidden = visible = 0
    for index in range(12):
        _, objects, masks = render_image(np.random.default_rng([0, 0, index]), params, with_masks=True,
                                         with_keypoints=True)
        for label, (x1, y1, x2, y2), _, keypoints in objects:
            points = np.asarray(keypoints, dtype=np.float64).reshape(len(KEYPOINT_NAMES), 3)
            top, right, bottom, left = points
            assert top[1] == pytest.approx(y1, abs=0.01) and bottom[1] == pytest.approx(y2, abs=0.01)
            assert left[0] == pytest.approx(x1, abs=0.01) and right[0] == pytest.approx(x2, abs=0.01)
            assert ((points[:, 0] >= x1 - 0.01) & (points[:, 0] <= x2 + 0.01)).all()
            assert set(points[:, 2]) <= {1.0, 2.0}
            hidden += int((points[:, 2] == 1).sum())
            visible += int((points[:, 2] == 2).sum())
    # Occlusion is common in shapes: some keypoints are hidden, most are not.
    assert 0 < hidden < visible


def test_a_hidden_keypoint_is_covered_by_a_later_shape(params):
    checked = 0
    for index in range(12):
        _, objects, masks = render_image(np.random.default_rng([0, 0, index]), params, with_masks=True,
                                         with_keypoints=True)
        for i, (_, _, _, keypoints) in enumerate(objects):
            for x, y, v in np.asarray(keypoints).reshape(-1, 3):
                row, column = int(round(y)), int(round(x))
                later = masks[i + 1:].any(0)[min(row, 319), min(column, 319)] if i + 1 < len(objects) else False
                # masks are visible regions: a later object's visible pixel covers this point.
                if v == 1:
                    checked += 1
                if later:
                    assert v == 1
    assert checked > 0
