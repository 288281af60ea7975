"""Training augmentation: sizes follow the config, boxes move with the image and stay inside it."""
import albumentations as A
import numpy as np
import pytest
import torch

from detector.data import build_dataset
from detector.data.transforms import ShortestEdgeResize, apply_transform, detection_compose


def _check_samples(dataset, min_sizes, max_size, count=12):
    for position in range(count):
        index = position % len(dataset)
        sample = dataset[(index, position)]
        image, boxes = sample["image"], sample["target"]["boxes"]
        height, width = image.shape[1:]
        assert image.dtype == torch.float32 and 0 <= float(image.min()) and float(image.max()) <= 1
        assert min(height, width) in min_sizes or max(height, width) == pytest.approx(max_size, abs=1)
        assert max(height, width) <= max_size + 1
        assert boxes.dtype == torch.float32 and sample["target"]["labels"].dtype == torch.int64
        assert len(boxes) == len(sample["target"]["labels"])
        assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
        assert bool((boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())
        assert bool(((boxes[:, 2:] - boxes[:, :2]) >= 1).all())


def test_augmented_boxes_inside_the_image_coco128(coco128_cfg):
    _check_samples(build_dataset(coco128_cfg(), "train"), (160, 192), 256)


def test_augmented_boxes_inside_the_image_bccd(bccd_cfg):
    with pytest.warns(UserWarning):  # the two zero-area boxes
        dataset = build_dataset(bccd_cfg(), "train")
    _check_samples(dataset, (160, 192), 256)


def test_augmented_boxes_inside_the_image_shapes(shapes_cfg):
    cfg = shapes_cfg()
    _check_samples(build_dataset(cfg, "train"), tuple(cfg.aug.min_size), cfg.aug.max_size)


def test_boxes_follow_the_flip_and_resize():
    image = np.zeros((100, 200, 3), np.uint8)
    image[10:30, 20:60] = 255  # the box's pixels
    boxes = np.array([[20, 10, 60, 30]], np.float32)
    transform = detection_compose([ShortestEdgeResize([50], 1000), A.HorizontalFlip(p=0.5)])
    flips = 0
    for seed in range(8):
        out, out_boxes, labels = apply_transform(transform, image, boxes, np.array([3]), seed)
        assert out.shape == (50, 100, 3) and labels.tolist() == [3]
        x1, y1, x2, y2 = out_boxes[0]
        assert (y1, y2) == pytest.approx((5, 15), abs=0.01)
        flipped = x1 > 50
        flips += flipped
        assert (x1, x2) == pytest.approx((70, 90) if flipped else (10, 30), abs=0.01)
        inside = out[int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1]
        assert inside.min() > 200  # the bright patch is where the box says
    assert 0 < flips < 8
    same = [apply_transform(transform, image, boxes, np.array([3]), 7)[1] for _ in range(2)]
    assert np.array_equal(same[0], same[1])


def test_max_size_caps_the_long_side_and_degenerate_boxes_are_dropped():
    image = np.zeros((100, 400, 3), np.uint8)
    boxes = np.array([[0, 0, 400, 100], [10, 10, 10.5, 90], [390, 0, 400, 0.2]], np.float32)
    out, out_boxes, labels = apply_transform(detection_compose([ShortestEdgeResize([200], 300)]), image, boxes,
                                             np.array([1, 2, 3]), 0)
    assert out.shape == (75, 300, 3)
    assert labels.tolist() == [1] and out_boxes[0].tolist() == pytest.approx([0, 0, 300, 75])


@pytest.mark.parametrize("overrides,min_sizes,max_size", [
    ([], [224, 256, 288], 288),                       # the shapes recipe (the default schedule)
    (["dataset=bccd"], [352, 384, 416], 555),         # the bccd recipe, picked by the dataset
    (["schedule=1x"], [640, 672, 704, 736, 768, 800], 1333),   # conf/aug/default.yaml's scales
])
def test_the_configured_pipeline_is_the_recipe(overrides, min_sizes, max_size):
    """aug.train builds the resize and the flip at the recipe's scales, and augments a sample
    exactly as the same transforms written by hand (same seed, same result)."""
    from detector.config import load_config
    from detector.data.transforms import build_augmentation, training_scales

    cfg = load_config(overrides)
    assert training_scales(cfg.aug) == (min_sizes, max_size)
    built = build_augmentation(cfg.aug.train)
    assert [type(t) for t in built.transforms] == [ShortestEdgeResize, A.HorizontalFlip]
    assert built.transforms[0].max_size == min_sizes and built.transforms[0].max_long_side == max_size
    assert built.transforms[1].p == 0.5
    by_hand = detection_compose([ShortestEdgeResize(min_sizes, max_size), A.HorizontalFlip(p=0.5)])
    image = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    boxes = np.array([[20, 30, 200, 220], [300, 100, 390, 380]], np.float32)
    sizes = set()
    for seed in range(6):
        ours = apply_transform(built, image, boxes, np.array([1, 2]), seed)
        theirs = apply_transform(by_hand, image, boxes, np.array([1, 2]), seed)
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
        sizes.add(min(ours[0].shape[:2]))
    assert len(sizes) > 1   # the scale is picked per sample


def test_a_pipeline_entry_that_is_not_a_transform_names_its_position():
    from detector.config import load_config
    from detector.data.transforms import build_augmentation

    cfg = load_config(["aug.train=[{_target_: albumentations.HorizontalFlip, p: 0.5}, {_target_: collections.OrderedDict}]"])
    with pytest.raises(ValueError, match=r"aug\.train\[1\]: collections\.OrderedDict made a OrderedDict, not an "
                                         "albumentations transform"):
        build_augmentation(cfg.aug.train)
    cfg = load_config(["aug.train=[{_target_: albumentations.HorizontalFlip, prob: 0.5}]"])
    with pytest.raises(TypeError, match=r"aug\.train\[0\]: albumentations\.HorizontalFlip does not take the keys"):
        build_augmentation(cfg.aug.train)


def test_training_scales_refuse_a_min_size_above_the_cap():
    from detector.config import load_config
    from detector.data.transforms import training_scales

    with pytest.raises(ValueError, match=r"aug\.min_size=\[300\] and aug\.max_size=288: .*no min_size larger"):
        training_scales(load_config(["aug.min_size=[300]"]).aug)
