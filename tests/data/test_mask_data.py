"""Instance masks through the data pipeline: from COCO polygons / RLE in the annotation file
to training targets "masks" [G, H, W] aligned with their boxes after augmentation."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from detector.config import load_config
from detector.data import (BadSampleError, BadSampleWarning, DatasetError, build_dataset, build_train_loader,
                           dataset_has_masks, require_masks)
from detector.data.masks import mask_to_rle, segmentation_to_mask
from detector.data.shapes import GENERATOR_VERSION, _is_current, generator_params, render_image

# The first training images are enough (and keep the test in seconds).
SAMPLES = 24


def _mask_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def test_coco128_polygons_reach_the_target_aligned_with_their_boxes(coco128_cfg):
    cfg = coco128_cfg()
    with_masks = build_dataset(cfg, "train", with_masks=True)
    box_only = build_dataset(cfg, "train")
    assert with_masks.with_masks and not box_only.with_masks
    assert all(r.segmentations is None for r in box_only.records)   # box training keeps no polygons
    offsets = []
    for position in range(SAMPLES):
        sample = with_masks[(position, position)]
        plain = box_only[(position, position)]
        target = sample["target"]
        # Masks draw no random numbers: the same seeded augmentation as box-only training.
        assert torch.equal(sample["image"], plain["image"])
        assert torch.equal(target["boxes"], plain["target"]["boxes"])
        assert torch.equal(target["labels"], plain["target"]["labels"])
        assert "masks" not in plain["target"]
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (len(target["boxes"]), *sample["image"].shape[1:])
        assert set(masks.unique().tolist()) <= {0, 1}
        for mask, box in zip(masks, target["boxes"]):
            assert mask.any()
            offsets.append(float((_mask_box(mask) - box).abs().max()))
    offsets = np.array(offsets)
    assert len(offsets) > 100
    # COCO's boxes are the polygons' extents; rasterising and the nearest-neighbour resize move
    # the mask's edges by a pixel or so, thin tips can vanish when the image shrinks.
    assert np.median(offsets) <= 1.5 and (offsets <= 2.0).mean() >= 0.95, np.percentile(offsets, [50, 95, 100])


def test_a_flip_moves_the_masks_with_the_boxes(coco128_cfg):
    kept = build_dataset(coco128_cfg("aug.train.1.p=0.0"), "train", with_masks=True)
    flipped = build_dataset(coco128_cfg("aug.train.1.p=1.0"), "train", with_masks=True)
    for position in range(6):
        a, b = kept[(position, position)]["target"], flipped[(position, position)]["target"]
        width = kept[(position, position)]["image"].shape[-1]
        assert torch.equal(b["masks"], a["masks"].flip(-1))
        mirrored = torch.stack([width - a["boxes"][:, 2], a["boxes"][:, 1], width - a["boxes"][:, 0],
                                a["boxes"][:, 3]], 1)
        assert torch.allclose(b["boxes"], mirrored, atol=1e-3)


def test_the_train_loader_batches_masks_only_when_asked(coco128_cfg):
    cfg = coco128_cfg("dataloader.batch_size=2")
    batch = next(iter(build_train_loader(cfg, with_masks=True)))
    for image, target in zip(batch["images"], batch["targets"]):
        assert target["masks"].shape == (len(target["boxes"]), *image.shape[1:])
    assert all("masks" not in t for t in next(iter(build_train_loader(cfg)))["targets"])


def test_the_test_split_keeps_segmentations_for_evaluation(coco128_cfg):
    from detector.data.formats import build_format

    cfg = coco128_cfg()
    gt = build_dataset(cfg, "test").gt_dict
    source = json.loads(open(build_format(cfg).paths("test")[1]).read())
    by_id = {a["id"]: a["segmentation"] for a in source["annotations"]}
    assert len(gt["annotations"]) > 100
    assert all(a["segmentation"] == by_id[a["id"]] for a in gt["annotations"])
    sizes = {i["id"]: (i["height"], i["width"]) for i in source["images"]}
    assert all((i["height"], i["width"]) == sizes[i["id"]] for i in gt["images"])


# ---------------------------------------------------------------- a small file of every spelling

def _write(tmp_path, annotations, size=(60, 40)):
    """One 60x40 image and a COCO file with `annotations`; the config of a mask dataset on it."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(images / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}],
            "annotations": [dict(a, id=i, image_id=1, category_id=a.get("category_id", 1))
                            for i, a in enumerate(annotations, 1)],
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    paths = [f"dataset.{split}.{part}={value}" for split in ("train", "test")
             for part, value in (("images", images), ("annotations", path))]
    # Resize-free pipeline (the image is already at the scale): masks stay pixel-exact.
    return load_config(["dataset=coco_format", *paths, "aug.min_size=[40]", "aug.max_size=60", "aug.train.1.p=0.0",
                        "dataloader.num_workers=0", "model=mask_rcnn_fpn"])


def _box_of(mask: np.ndarray) -> list:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def test_polygons_rle_and_compressed_rle_become_masks_and_crowd_stays_out(tmp_path):
    square = np.zeros((40, 60), np.uint8)
    square[5:15, 10:30] = 1
    ring = np.zeros((40, 60), np.uint8)   # an RLE can have a hole; a polygon cannot
    ring[20:36, 30:50] = 1
    ring[25:31, 35:45] = 0
    crowd = np.zeros((40, 60), np.uint8)
    crowd[0:40, 52:60] = 1
    runs, values = [], crowd.T.reshape(-1)   # column-major runs, starting with zeros
    current, count = 0, 0
    for v in values:
        if v != current:
            runs.append(count)
            current, count = v, 0
        count += 1
    runs.append(count)
    annotations = [
        {"bbox": [10, 5, 20, 10], "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]], "iscrowd": 0},
        {"bbox": _box_of(ring), "segmentation": mask_to_rle(ring), "iscrowd": 0, "category_id": 2},
        {"bbox": _box_of(crowd), "segmentation": {"size": [40, 60], "counts": runs}, "iscrowd": 1},
    ]
    cfg = _write(tmp_path, annotations)
    assert dataset_has_masks(cfg)
    require_masks(cfg)   # no error
    dataset = build_dataset(cfg, "train", with_masks=True)
    target = dataset[(0, 0)]["target"]
    assert target["labels"].tolist() == [1, 2]          # the crowd region is no training target
    assert np.array_equal(target["masks"][0].numpy(), square)
    assert np.array_equal(target["masks"][1].numpy(), ring)
    # ... but stays in the evaluation GT, with every segmentation, as the file spells it.
    gt = build_dataset(cfg, "test").gt_dict
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 0, 1]
    assert [a["segmentation"] for a in gt["annotations"]] == [a["segmentation"] for a in annotations]
    assert (gt["images"][0]["width"], gt["images"][0]["height"]) == (60, 40)
    assert np.array_equal(segmentation_to_mask(gt["annotations"][2]["segmentation"], 40, 60), crowd)


def test_masks_are_dropped_with_their_boxes(tmp_path):
    # Box 2 is 0.5 px wide: below aug.min_box_size, so it leaves the target with its mask.
    annotations = [
        {"bbox": [10, 5, 20, 10], "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]]},
        {"bbox": [40, 5, 0.5, 10], "segmentation": [[40, 5, 40.5, 5, 40.5, 15, 40, 15]]},
        {"bbox": [40, 20, 10, 10], "segmentation": [[40, 20, 50, 20, 50, 30, 40, 30]], "category_id": 2},
    ]
    target = build_dataset(_write(tmp_path, annotations), "train", with_masks=True)[(0, 0)]["target"]
    assert target["labels"].tolist() == [1, 2]
    assert [_box_of(m.numpy()) for m in target["masks"]] == [[10, 5, 20, 10], [40, 20, 10, 10]]


def test_a_crop_that_drops_a_box_drops_its_mask():
    import albumentations as A

    from detector.data.transforms import apply_transform, detection_compose

    image = np.zeros((40, 60, 3), np.uint8)
    masks = np.zeros((3, 40, 60), np.uint8)
    boxes = np.array([[0, 0, 10, 10], [30, 0, 40, 10], [50, 20, 60, 30]], np.float32)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
        mask[y1:y2, x1:x2] = 1
    # The crop keeps x in [20, 60): the first box falls outside and albumentations removes it.
    crop = detection_compose([A.Crop(x_min=20, y_min=0, x_max=60, y_max=40)])
    out, kept_boxes, labels, kept_masks = apply_transform(crop, image, boxes, np.array([1, 2, 3]), 0, masks=masks)
    assert labels.tolist() == [2, 3] and kept_masks.shape == (2, 40, 40)
    assert [_box_of(m) for m in kept_masks] == [[10, 0, 10, 10], [30, 20, 10, 10]]
    assert np.allclose(kept_boxes, [[10, 0, 20, 10], [30, 20, 40, 30]], atol=1e-4)


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_a_box_without_a_usable_segmentation_is_a_bad_sample(tmp_path, policy):
    annotations = [
        {"bbox": [10, 5, 20, 10], "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]]},
        {"bbox": [40, 20, 10, 10]},   # no segmentation
    ]
    cfg = _write(tmp_path, annotations)
    cfg.dataset.on_bad_sample = policy
    # Box-only training does not care.
    assert build_dataset(cfg, "train")[(0, 0)]["target"]["labels"].tolist() == [1, 1]
    if policy == "error":
        with pytest.raises(BadSampleError, match="Annotation id 2 has no segmentation"):
            build_dataset(cfg, "train", with_masks=True)
        return
    with pytest.warns(BadSampleWarning, match="Annotation id 2 has no segmentation"):
        dataset = build_dataset(cfg, "train", with_masks=True)
    assert dataset.records[0].problem is not None


@pytest.mark.parametrize("segmentation, reason", [
    (mask_to_rle(np.ones((10, 10), np.uint8)), r"is an RLE of size \[10, 10\] \(height, width\) but its image is 40x60"),
    ({"size": [40, 60], "counts": "not~an~rle"}, "compressed RLE with the invalid character"),
    ({"size": [40, 60], "counts": [5, 5]}, "run lengths add up to 10, not height\\*width = 2400"),
    ([[0, 0, 10, float("nan"), 10, 10]], "polygon #0 is"),
    ([[0, 0, 10, 0, 10]], "odd number of coordinates"),
    ([["0", "0", "10", "0", "10", "10"]], "polygon #0 is"),
    (7, "is a int; expected polygons"),
])
def test_a_malformed_segmentation_is_a_bad_sample_naming_the_annotation(tmp_path, segmentation, reason):
    cfg = _write(tmp_path, [{"bbox": [0, 0, 10, 10], "segmentation": segmentation},
                            {"bbox": [20, 20, 10, 10], "segmentation": [[20, 20, 30, 20, 30, 30]]}])
    cfg.dataset.on_bad_sample = "error"
    with pytest.raises(BadSampleError, match="Annotation id 1: segmentation .*" + reason):
        build_dataset(cfg, "train", with_masks=True)
    assert len(build_dataset(cfg, "train")) == 1   # box-only training does not read them


# ---------------------------------------------------------------- datasets without masks

def test_a_mask_model_on_a_dataset_without_masks_is_a_config_error(tmp_path, bccd_cfg):
    # A COCO export that writes "segmentation": [] (box-only tools do) has no masks.
    cfg = _write(tmp_path, [{"bbox": [10, 5, 20, 10], "segmentation": []}])
    assert not dataset_has_masks(cfg)
    message = r"model=mask_rcnn_fpn needs instance masks but dataset=coco_format has none.*model=faster_rcnn_fpn"
    with pytest.raises(DatasetError, match=message):
        require_masks(cfg)
    with pytest.raises(DatasetError, match=message):
        build_train_loader(cfg, with_masks=True)
    # Box models are unaffected.
    assert len(build_dataset(cfg, "train")) == 1
    voc = bccd_cfg("model=cascade_mask_rcnn_fpn")
    assert not dataset_has_masks(voc)
    with pytest.raises(DatasetError, match="model=cascade_mask_rcnn_fpn needs instance masks but dataset=bccd"):
        require_masks(voc)


def test_coco128_and_shapes_have_masks(coco128_cfg, shapes_cfg):
    assert dataset_has_masks(coco128_cfg())
    assert dataset_has_masks(shapes_cfg())


# ---------------------------------------------------------------- the generated shapes

def test_shapes_segmentations_are_the_visible_regions(shapes_cfg, shapes_root):
    params = generator_params(shapes_cfg().dataset)
    written = json.loads((shapes_root / "annotations" / "train.json").read_text())
    occluded = exact = 0
    for index in range(6):
        image, objects, masks = render_image(np.random.default_rng([0, 0, index]), params, with_masks=True)
        # What the generator writes is what it rendered.
        in_file = [a for a in written["annotations"] if a["image_id"] == index + 1]
        assert [a["segmentation"] for a in in_file] == [o[2] for o in objects]
        union = np.zeros(masks.shape[1:], np.int32)
        for (label, box, segmentation), mask in zip(objects, masks):
            raster = segmentation_to_mask(segmentation, *mask.shape).astype(bool)
            iou = (raster & mask).sum() / (raster | mask).sum()
            assert iou >= 0.99
            union += mask
            x1, y1, x2, y2 = box
            ys, xs = np.nonzero(mask)
            # Visible pixels lie inside the box (the polygon's extent, half a pixel to the right/down).
            assert xs.min() >= x1 - 0.5 and xs.max() + 1 <= x2 + 1.5 and ys.min() >= y1 - 0.5 and ys.max() + 1 <= y2 + 1.5
            if isinstance(segmentation, list) and len(segmentation) == 1 and len(segmentation[0]) >= 6:
                # Unoccluded: the exact polygon, whose extent is the box's (+0.5 px, see shapes.py).
                polygon = np.array(segmentation[0]).reshape(-1, 2)
                if np.allclose(polygon.min(0), [x1 + 0.5, y1 + 0.5], atol=0.02) and \
                        np.allclose(polygon.max(0), [x2 + 0.5, y2 + 0.5], atol=0.02):
                    exact += 1
                    continue
            occluded += 1
        assert union.max() <= 1   # instances do not overlap: a pixel shows one object
    assert exact > 10 and occluded > 0


def test_a_shapes_cache_without_segmentations_is_regenerated(tmp_path, shapes_cfg):
    params = generator_params(shapes_cfg().dataset)
    assert GENERATOR_VERSION >= 3 and params["version"] == GENERATOR_VERSION
    (tmp_path / "generator.json").write_text(json.dumps(dict(params, version=2)))
    assert not _is_current(str(tmp_path), params)
    (tmp_path / "generator.json").write_text(json.dumps(params))
    assert _is_current(str(tmp_path), params)


def test_shapes_training_targets_have_masks_inside_their_boxes(shapes_cfg):
    # At the generated scale: the masks are the drawn pixels, half a pixel right/down of the boxes.
    dataset = build_dataset(shapes_cfg("aug.min_size=[320]", "aug.max_size=320"), "train", with_masks=True)
    for position in range(4):
        target = dataset[(position, position)]["target"]
        assert target["masks"].shape[0] == len(target["boxes"]) > 0
        for mask, box in zip(target["masks"], target["boxes"]):
            mask_box = _mask_box(mask)
            assert (mask_box[:2] >= box[:2] - 1.5).all() and (mask_box[2:] <= box[2:] + 1.5).all()


def test_decoding_masks_leaves_box_only_datasets_alone(shapes_cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadSampleWarning)
        dataset = build_dataset(shapes_cfg(), "train")
    assert not dataset.with_masks and all(r.segmentations is None for r in dataset.records)


def test_a_user_format_can_give_segmentations(tmp_path):
    from detector.data import DatasetFormat, ImageBoxes

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    square = [[2, 3, 12, 3, 12, 9, 2, 9]]

    class Listed(DatasetFormat):
        def __init__(self, segmentations):
            super().__init__(name="listed", classes=None, filter_empty=True, on_bad_sample="error",
                             max_image_pixels=10**8)
            self.segmentations = segmentations

        def index(self, split):
            return self.index_boxes([ImageBoxes(str(tmp_path / "a.png"), [[2, 3, 12, 9]], ["thing"],
                                                segmentations=self.segmentations)], "listed")

    assert not Listed([]).has_masks()
    with_masks = Listed([square])
    assert with_masks.has_masks()
    index = with_masks.index("train")
    assert index.records[0].segmentations == [square] and index.gt_dict["annotations"][0]["segmentation"] == square


def test_packed_segmentations_decode_as_coco_rasterises_them():
    from detector.data.masks import pack_segmentations

    ring = np.zeros((30, 40), np.uint8)
    ring[5:25, 5:35] = 1
    ring[10:20, 10:30] = 0
    segmentations = [
        [[1, 1, 9, 1, 9, 7, 1, 7], [20, 2, 30, 2, 25, 9]],   # two parts: their union
        mask_to_rle(ring),                                   # compressed RLE (with a hole)
        [[3, 3, 5, 5]],                                      # a degenerate part only: no pixels
        {"size": [30, 40], "counts": [600, 600]},            # uncompressed RLE: 600 zeros (20 columns), then ones
    ]
    packed = pack_segmentations(segmentations, 30, 40, [1, 2, 3, 4])
    assert len(packed) == 4 and packed.coords.dtype == np.float32
    masks = packed.decode(30, 40)
    assert masks.shape == (4, 30, 40) and masks.dtype == np.uint8
    for mask, segmentation in zip(masks, segmentations):
        assert np.array_equal(mask, segmentation_to_mask(segmentation, 30, 40))
    assert masks[2].sum() == 0 and masks[3][:, 20:].all() and not masks[3][:, :20].any()
