"""COCO segmentations (polygons, RLE, compressed RLE, crowd) <-> binary masks."""
import json

import cv2
import numpy as np
import pytest

from detector.data.masks import (
    MaskFormatError,
    annotation_to_mask,
    check_segmentation,
    compressed_counts,
    mask_to_polygons,
    mask_to_rle,
    masks_to_rles,
    rle_area,
    rle_to_box,
    rle_to_mask,
    segmentation_to_mask,
    segmentation_to_rle,
)

H, W = 40, 50


def _star_polygon(cx=24.0, cy=20.0, outer=15.0, inner=6.0, points=5):
    angles = np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    xy = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    return [float(v) for v in xy.reshape(-1)]


def test_polygon_mask_rle_round_trip_is_exact():
    polygons = [_star_polygon(), [2.0, 2.0, 12.0, 3.5, 6.0, 11.0]]  # two parts of one object
    mask = segmentation_to_mask(polygons, H, W, ann_id=5)
    assert mask.shape == (H, W) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert mask[20, 24] == 1 and mask[0, W - 1] == 0 and mask[4, 5] == 1  # star centre, corner, triangle
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [H, W]
    json.dumps(rle)  # results files are JSON
    assert np.array_equal(rle_to_mask(rle), mask)
    # Read back as a compressed-RLE segmentation, it is the same mask again.
    assert np.array_equal(segmentation_to_mask(rle, H, W), mask)
    assert rle_area(rle) == int(mask.sum())
    ys, xs = np.nonzero(mask)
    assert rle_to_box(rle) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_mask_to_polygons_rasterises_back_to_the_same_pixels():
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [np.array([[3, 4], [30, 9], [12, 35]])], 1)  # a triangle
    mask[30:36, 36:47] = 1                                            # a separate rectangle
    mask[2, 45] = 1                                                   # a single pixel
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 3
    assert np.array_equal(segmentation_to_mask(polygons, H, W), mask)


def test_rle_area_equals_mask_sum_for_many_masks():
    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(6, H, W)) < np.linspace(0.0, 0.9, 6)[:, None, None]).astype(np.uint8)
    rles = masks_to_rles(masks)
    assert len(rles) == 6
    for mask, rle in zip(masks, rles):
        assert rle_area(rle) == int(mask.sum())
        assert np.array_equal(rle_to_mask(rle), mask)


def _uncompressed_rle(mask):
    """COCO's crowd spelling: run lengths down the columns, starting with zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def test_crowd_uncompressed_rle_reads():
    mask = np.zeros((H, W), np.uint8)
    mask[5:25, 10:40] = 1
    mask[12:15, 20:30] = 0  # a hole: fine in RLE
    crowd = {"id": 77, "iscrowd": 1, "segmentation": _uncompressed_rle(mask)}
    assert check_segmentation(crowd["segmentation"], H, W) == "rle"
    read = annotation_to_mask(crowd, H, W)
    assert np.array_equal(read, mask)
    assert rle_area(crowd["segmentation"]) == int(mask.sum())
    assert np.array_equal(rle_to_mask(segmentation_to_rle(crowd["segmentation"], H, W)), mask)


def test_coco128_segmentations_read(coco128):
    gt = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    images = {image["id"]: image for image in gt["images"]}
    kinds = set()
    for ann in gt["annotations"][:200] + [a for a in gt["annotations"] if a["iscrowd"]]:
        image = images[ann["image_id"]]
        kinds.add(check_segmentation(ann["segmentation"], image["height"], image["width"], ann["id"]))
        mask = annotation_to_mask(ann, image["height"], image["width"])
        assert mask.shape == (image["height"], image["width"])
        # COCO's own "area" is the polygon's exact area: the pixel count is close to it.
        assert mask.sum() == pytest.approx(ann["area"], rel=0.35, abs=30), ann["id"]
    assert kinds == {"polygons", "rle"}


@pytest.mark.parametrize("segmentation, message", [
    ([[1.0, 2.0, 3.0]], "odd number of coordinates"),
    ([["a", 1, 2, 3, 4, 5]], "polygon #0"),
    ([], "empty list"),
    ("abc", "expected polygons"),
    ({"size": [H], "counts": [H * W]}, "expected \\[height, width\\]"),
    ({"size": [H, W], "counts": [5, 5]}, "add up to 10"),
    ({"size": [H + 1, W], "counts": [(H + 1) * W]}, "its image is 40x50"),
    ({"size": [H, W], "counts": 3.5}, "counts of type float"),
])
def test_malformed_segmentation_names_the_annotation(segmentation, message):
    with pytest.raises(MaskFormatError, match=message) as error:
        annotation_to_mask({"id": 4242, "segmentation": segmentation}, H, W)
    assert "Annotation id 4242" in str(error.value)


def test_missing_segmentation_and_corrupt_compressed_rle():
    with pytest.raises(MaskFormatError, match="Annotation id 9 has no 'segmentation'"):
        annotation_to_mask({"id": 9, "bbox": [0, 0, 1, 1]}, H, W)
    good = mask_to_rle(np.ones((H, W), np.uint8))
    assert annotation_to_mask({"id": 1, "segmentation": good}, H, W).all()
    # pycocotools would decode these into garbage without a word.
    short = mask_to_rle(np.ones((H - 1, W), np.uint8))["counts"]
    with pytest.raises(MaskFormatError, match="Annotation id 2: .* add up to 1950"):
        annotation_to_mask({"id": 2, "segmentation": {"size": [H, W], "counts": short}}, H, W)
    with pytest.raises(MaskFormatError, match="Annotation id 3: .* invalid character"):
        annotation_to_mask({"id": 3, "segmentation": {"size": [H, W], "counts": "~~"}}, H, W)


def test_compressed_counts_are_the_run_lengths():
    rng = np.random.default_rng(3)
    for density in (0.0, 0.1, 0.5, 1.0):
        mask = (rng.uniform(size=(17, 23)) < density).astype(np.uint8)
        rle = mask_to_rle(mask)
        runs = compressed_counts(rle["counts"])
        assert sum(runs) == mask.size and sum(runs[1::2]) == mask.sum()
        assert runs == _uncompressed_rle(mask)["counts"]


def test_degenerate_polygons_are_left_out():
    # A two-point "polygon" has no area (and pycocotools would read 4 numbers as a box).
    mask = segmentation_to_mask([[1.0, 1.0, 30.0, 30.0], [2.0, 2.0, 12.0, 3.5, 6.0, 11.0]], H, W)
    assert np.array_equal(mask, segmentation_to_mask([[2.0, 2.0, 12.0, 3.5, 6.0, 11.0]], H, W))
    assert segmentation_to_mask([[1.0, 1.0, 30.0, 30.0]], H, W).sum() == 0
