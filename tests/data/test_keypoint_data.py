"""Keypoints through the data: COCO triplets into [G, K, 3] training targets, moved with the
augmentation exactly as the boxes, left and right renamed by a mirror, refused where they
cannot be used (no keypoints, different lists per category, a wrong flip map)."""
import json

import albumentations as A
import numpy as np
import pytest
import torch

from detector.config import load_config
from detector.data import build_dataset
from detector.data.coco_index import DatasetError, index_coco
from detector.data.keypoints import flip_permutation, keypoint_spec, require_keypoints
from detector.data.transforms import ShortestEdgeResize, apply_transform, detection_compose

from .conftest import SMALL_AUG


def test_flip_permutation_from_names_or_the_config():
    coco = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
    assert flip_permutation(coco, None, "x").tolist() == [0, 2, 1, 4, 3]
    assert flip_permutation(["top", "right", "bottom", "left"], None, "x").tolist() == [0, 3, 2, 1]
    assert flip_permutation(["a", "b", "c"], [["a", "c"]], "x").tolist() == [2, 1, 0]
    with pytest.raises(DatasetError, match=r"\['a', 'z'\] must be two of"):
        flip_permutation(["a", "b"], [["a", "z"]], "x")


def test_categories_with_different_keypoints_are_refused():
    categories = [{"id": 1, "name": "cat", "keypoints": ["ear", "tail"]}, {"id": 2, "name": "dog", "keypoints": ["nose"]}]
    with pytest.raises(DatasetError, match="different keypoints.*cat: \\['ear', 'tail'\\]; dog: \\['nose'\\]"):
        keypoint_spec(categories, "train.json")
    assert keypoint_spec([{"id": 1, "name": "cat"}], "train.json") is None


def _points(keypoints):
    return np.asarray(keypoints, np.float32)


def test_a_mirror_moves_keypoints_with_the_boxes_and_swaps_left_and_right():
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[10, 20, 60, 80]], np.float32)
    # top (35, 20), right (60, 50), bottom (35, 80), left (10, 50): on the box's edges.
    keypoints = _points([[[35, 20, 2], [60, 50, 2], [35, 80, 1], [10, 50, 2]]])
    flip = np.array([0, 3, 2, 1])
    steps = [ShortestEdgeResize([50], 1000), A.HorizontalFlip(p=1.0)]
    out_image, out_boxes, _, out_keypoints = apply_transform(
        detection_compose(steps, with_keypoints=True), image, boxes, np.array([1]), 0, keypoints=keypoints,
        flip_permutation=flip)
    assert out_image.shape[:2] == (50, 100)
    x1, y1, x2, y2 = out_boxes[0]
    top, right, bottom, left = out_keypoints[0]
    # Still on the edges of the moved box, and the new "right" is the old left point (x = W - x).
    assert right[0] == pytest.approx(x2, abs=1e-4) and left[0] == pytest.approx(x1, abs=1e-4)
    assert top[1] == pytest.approx(y1, abs=1e-4) and bottom[1] == pytest.approx(y2, abs=1e-4)
    assert right.tolist() == pytest.approx([100 - 5, 25, 2]) and bottom[2] == 1
    # Without the mirror nothing is renamed; the boxes are the same with or without keypoints.
    _, plain_boxes, _, plain = apply_transform(detection_compose(steps[:1], with_keypoints=True), image, boxes,
                                               np.array([1]), 0, keypoints=keypoints, flip_permutation=flip)
    assert plain[0, 1].tolist() == pytest.approx([30, 25, 2])
    _, box_only, _ = apply_transform(detection_compose(steps[:1]), image, boxes, np.array([1]), 0)
    assert np.array_equal(plain_boxes, box_only)


def test_points_leaving_the_image_become_unlabelled():
    image = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[10, 10, 90, 90]], np.float32)
    keypoints = _points([[[20, 20, 2], [80, 80, 2]]])
    crop = detection_compose([A.Crop(0, 0, 50, 50)], with_keypoints=True)
    _, _, _, out = apply_transform(crop, image, boxes, np.array([1]), 0, keypoints=keypoints,
                                   flip_permutation=np.array([0, 1]))
    assert out[0, 0].tolist() == pytest.approx([20, 20, 2]) and out[0, 1].tolist() == [0, 0, 0]


def test_shapes_training_targets_carry_keypoints_on_their_boxes(shapes_cfg):
    cfg = shapes_cfg(*SMALL_AUG)
    dataset = build_dataset(cfg, "train", with_keypoints=True)
    plain = build_dataset(cfg, "train")
    for position in range(6):
        sample = dataset[(position, position)]
        target = sample["target"]
        assert torch.equal(target["boxes"], plain[(position, position)]["target"]["boxes"])
        keypoints, boxes = target["keypoints"], target["boxes"]
        assert keypoints.shape == (len(boxes), 4, 3) and keypoints.dtype == torch.float32
        # top on the box's top edge, right on its right edge, ... after resize and any flip.
        assert torch.allclose(keypoints[:, 0, 1], boxes[:, 1], atol=0.05)
        assert torch.allclose(keypoints[:, 1, 0], boxes[:, 2], atol=0.05)
        assert torch.allclose(keypoints[:, 2, 1], boxes[:, 3], atol=0.05)
        assert torch.allclose(keypoints[:, 3, 0], boxes[:, 0], atol=0.05)
    assert "keypoints" not in plain[(0, 0)]["target"]


def test_a_keypoint_model_on_data_without_keypoints_is_refused(shapes_cfg, tmp_path):
    cfg = shapes_cfg()
    spec = require_keypoints(_with_keypoint_head(cfg))
    assert spec.names == ("top", "right", "bottom", "left")
    images = tmp_path / "images"
    images.mkdir()
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
                                       "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))
    boxes = _with_keypoint_head(load_config(["dataset=coco_format", f"dataset.train.images={images}",
                                             f"dataset.train.annotations={annotations}",
                                             f"dataset.test.images={images}", f"dataset.test.annotations={annotations}"]))
    with pytest.raises(DatasetError, match="model=keypoint_rcnn_fpn needs keypoints but dataset=coco_format has none"):
        require_keypoints(boxes)
    wrong = _with_keypoint_head(shapes_cfg("dataset.keypoint_sigmas=[0.05,0.05]"))
    with pytest.raises(DatasetError, match="keypoint_sigmas has 2 values for 4 keypoints"):
        require_keypoints(wrong)


def _with_keypoint_head(cfg):
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.model.name = "keypoint_rcnn_fpn"
        cfg.model.roi_heads.keypoint_head = {"num_keypoints": None}
    return cfg


def test_gt_annotations_get_num_keypoints():
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 50}],
            "categories": [{"id": 1, "name": "p", "keypoints": ["a", "b"]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20],
                             "keypoints": [5, 5, 2, 0, 0, 0]}]}
    index = index_coco(coco, "", "a.json")
    assert index.gt_dict["annotations"][0]["num_keypoints"] == 1
    assert index.records[0].keypoints == [[5, 5, 2, 0, 0, 0]]


def _write_pose_folder(root, lines, kpt_shape="[3, 3]", flip_idx="[0, 2, 1]"):
    from PIL import Image

    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (100, 50), (90, 120, 200)).save(root / "images" / split / "a.jpg")
        (root / "labels" / split / "a.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames: [person]\n"
                                    f"kpt_shape: {kpt_shape}\nflip_idx: {flip_idx}\n")


def test_yolo_pose_labels_become_coco_keypoints_with_their_flip_idx(tmp_path):
    # Box centred at (0.5, 0.5), half the image; points: visible, hidden, not labelled.
    _write_pose_folder(tmp_path, ["0 0.5 0.5 0.5 0.5 0.3 0.4 2 0.7 0.6 1 0 0 0"])
    cfg = load_config(["dataset=yolo", f"dataset.path={tmp_path}", "dataset.keypoint_sigmas=[0.05,0.05,0.05]"])
    dataset = build_dataset(cfg, "train", with_keypoints=True)
    record = dataset.records[0]
    assert np.allclose(record.keypoints[0], [[30, 20, 2], [70, 30, 1], [0, 0, 0]])
    # flip_idx [0, 2, 1] from data.yaml, since dataset.keypoint_flip_map is null.
    assert dataset.keypoint_flip.tolist() == [0, 2, 1]
    spec = require_keypoints(_with_keypoint_head(cfg))
    assert spec.names == ("keypoint_0", "keypoint_1", "keypoint_2")
    gt = dataset.gt_dict["annotations"][0]
    assert gt["num_keypoints"] == 2 and len(gt["keypoints"]) == 9


def test_a_pose_line_of_the_wrong_length_is_a_bad_sample(tmp_path):
    _write_pose_folder(tmp_path, ["0 0.5 0.5 0.5 0.5 0.3 0.4 2"])
    cfg = load_config(["dataset=yolo", f"dataset.path={tmp_path}", "dataset.on_bad_sample=error"])
    from detector.data.dataset import BadSampleError

    with pytest.raises(BadSampleError, match="a pose label .* 'class cx cy w h' plus 3 x 3 keypoint values"):
        build_dataset(cfg, "train", with_keypoints=True)
