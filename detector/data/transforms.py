"""The training augmentation: a list of albumentations transforms in the config (conf/aug/).

The default: shortest-edge resize to a size picked per image, capped by a longest-edge
maximum (ShortestEdgeResize), then a horizontal flip; any albumentations transform can be
added to the list. Boxes (and a mask model's instance masks) move with the image, boxes
are clipped to it, and boxes thinner than `aug.min_box_size` pixels afterwards are dropped
with their masks (the model's box coder divides by box width and height). Testing needs no transform: the model resizes in eval mode.

A keypoint model's keypoints move with the image too. Each point rides as a tiny box centred on
it, so it follows exactly the geometry of the boxes (albumentations' own keypoints put pixel
centres at integers and flip to W - 1 - x, a pixel off the boxes, which flip to W - x as COCO's
continuous coordinates do); three probe points through albumentations' keypoint target tell
whether the pipeline mirrored the image (the orientation of a triangle flips), and then left
and right keypoints swap names (detector/data/keypoints.py's flip permutation). A point that
leaves the image becomes "not labelled" (v=0), as COCO marks it.
"""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np

from detector.modeling.boxes import box_sizes_at_least, clip_to_image


class ShortestEdgeResize(A.SmallestMaxSize):
    """Scale so the short side is one of `min_sizes` unless the long side would pass `max_size`.

    The same rule as the model's own eval-time resize, so train and test scales agree.
    """

    def __init__(self, min_sizes: Sequence[int], max_size: int, p: float = 1.0):
        super().__init__(max_size=list(min_sizes), interpolation=cv2.INTER_LINEAR, p=p)
        self.max_long_side = int(max_size)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        short = self.py_random.choice(self.max_size)
        scale = min(short / min(height, width), self.max_long_side / max(height, width))
        return {"scale": scale}


# Boxes are clipped and filtered by `apply_transform` itself, so nothing is silently
# rejected inside albumentations.
BBOX_PARAMS = {"format": "pascal_voc", "label_fields": ["labels"], "clip": True}
# Half the side of the box a keypoint rides in (pixels): small, so clipping at the border moves
# a point by at most this much, and positive, so no transform takes it for an empty box.
KEYPOINT_BOX_HALF = 0.25


def detection_compose(steps: Sequence, with_keypoints: bool = False) -> A.Compose:
    """Albumentations `steps` as one pipeline that moves xyxy pixel boxes (with their labels);
    with_keypoints: also the probe points apply_transform reads a mirror from."""
    extra = {"keypoint_params": A.KeypointParams(format="xy", remove_invisible=False)} if with_keypoints else {}
    return A.Compose(list(steps), bbox_params=A.BboxParams(**BBOX_PARAMS), **extra)


def build_augmentation(nodes, with_keypoints: bool = False) -> A.Compose:
    """The training pipeline of `cfg.aug.train`: a list of transform nodes, each with a
    `_target_` (an albumentations class, ShortestEdgeResize, or a user's own transform)
    and its arguments, run in order (conf/aug/default.yaml)."""
    from omegaconf import ListConfig, OmegaConf

    from detector.instantiate import ConfigNode, instantiate

    if not isinstance(nodes, (list, ListConfig)):
        raise ValueError(f"aug.train must be a list of transforms with a _target_ each (see conf/aug/default.yaml), "
                         f"got {type(nodes).__name__}.")
    steps = []
    for position, node in enumerate(nodes):
        values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        # Errors about this entry name it: aug.train[i].
        step = instantiate(ConfigNode(values, f"aug.train[{position}]"))
        if not isinstance(step, (A.BasicTransform, A.BaseCompose)):
            raise ValueError(f"aug.train[{position}]: {node['_target_']} made a {type(step).__name__}, "
                             "not an albumentations transform.")
        steps.append(step)
    return detection_compose(steps, with_keypoints)


def describe_augmentation(nodes) -> list[str]:
    """One line per transform of `cfg.aug.train`: its class and its arguments, resolved."""
    from omegaconf import OmegaConf

    lines = []
    for position, node in enumerate(nodes):
        values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        target = values.pop("_target_", "?")
        arguments = ", ".join(f"{key}={value!r}" for key, value in values.items())
        lines.append(f"aug.train[{position}]: {target}({arguments})")
    return lines


def training_scales(aug) -> tuple[list[int], int]:
    """(shortest-edge sizes, longest-edge cap) of the training images: `aug.min_size` and
    `aug.max_size`, which the resize step of aug.train uses and the label statistics read.
    ValueError naming the keys when no image could be resized to them."""
    from omegaconf import OmegaConf

    sizes = aug.min_size
    min_sizes = [int(v) for v in sizes] if OmegaConf.is_list(sizes) or isinstance(sizes, (list, tuple)) else [int(sizes)]
    max_size = int(aug.max_size)
    if not min_sizes or min(min_sizes) <= 0 or max(min_sizes) > max_size:
        raise ValueError(f"aug.min_size={min_sizes} and aug.max_size={max_size}: sizes must be > 0 "
                         "and no min_size larger than max_size.")
    return min_sizes, max_size


def apply_transform(transform: A.Compose | None, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    seed: int, min_box_size: float = 1.0, masks: np.ndarray | None = None,
                    keypoints: np.ndarray | None = None, flip_permutation: np.ndarray | None = None):
    """Run `transform` with its randomness fixed by `seed`; returns (image, boxes, labels), and
    (image, boxes, labels, masks) when instance `masks` (uint8 [G, H, W], one per box) are given.
    With `keypoints` (float32 [G, K, 3], one set per box; the transform built with_keypoints)
    the keypoints are returned last, moved with the image, renamed by `flip_permutation` when
    the pipeline mirrored it (see the module doc).

    Masks go through the same transforms as the image (albumentations' `masks` target:
    nearest-neighbour resize, the same flip), and are dropped with their boxes. Seeding per
    call (not per worker) is what makes a sample's augmentation a function of its position
    in the training stream, whatever the number of workers; masks draw no random numbers,
    so the boxes are the same with or without them.
    """
    boxes = boxes.reshape(-1, 4)
    # Each box's index rides through the pipeline as its "label": albumentations may drop
    # boxes (outside after a crop), and the index tells which labels and masks remain.
    kept = np.arange(len(boxes))
    if masks is not None and len(masks) != len(boxes):
        raise ValueError(f"apply_transform: {len(masks)} masks for {len(boxes)} boxes; expected one mask per box.")
    if keypoints is not None and len(keypoints) != len(boxes):
        raise ValueError(f"apply_transform: {len(keypoints)} keypoint sets for {len(boxes)} boxes; expected one per box.")
    if transform is not None:
        transform.set_random_seed(seed)
        inputs = {"image": image, "bboxes": boxes, "labels": kept}
        if masks is not None and len(masks):
            inputs["masks"] = masks
        if keypoints is not None:
            inputs = _with_keypoint_riders(inputs, keypoints, image.shape[:2])
        out = transform(**inputs)
        image = out["image"]
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        kept = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        if keypoints is not None:
            boxes, kept, keypoints = _keypoints_from_riders(out, boxes, kept, keypoints, flip_permutation)
        if "masks" in inputs:
            masks = np.asarray(out["masks"], dtype=np.uint8).reshape(-1, *image.shape[:2])[kept]
    height, width = image.shape[:2]
    if masks is not None and not len(masks):
        masks = np.zeros((0, height, width), dtype=np.uint8)
    boxes = boxes.astype(np.float32, copy=True)
    boxes = clip_to_image(boxes, (height, width))
    keep = box_sizes_at_least(boxes, min_box_size)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)[kept]
    outputs = [image, boxes[keep], labels[keep]]
    if masks is not None:
        outputs.append(masks[keep])
    if keypoints is not None:
        # Indexing copies: the record's own array is never written.
        outputs.append(_outside_unlabelled(keypoints.astype(np.float32)[kept][keep], (height, width)))
    return tuple(outputs)


def _with_keypoint_riders(inputs: dict, keypoints: np.ndarray, shape: tuple[int, int]) -> dict:
    """The inputs plus a tiny box per keypoint (labelled len(boxes) + its flat index) and the
    three probe points (0, 0), (W, 0), (0, H) whose orientation reveals a mirror."""
    height, width = shape
    boxes, kept = inputs["bboxes"], inputs["labels"]
    points = keypoints.reshape(-1, 3)[:, :2].astype(np.float32)
    # Inside the image (albumentations refuses boxes outside it); unlabelled points sit at 0, 0.
    points = np.clip(points, KEYPOINT_BOX_HALF, [width - KEYPOINT_BOX_HALF, height - KEYPOINT_BOX_HALF])
    riders = np.concatenate([points - KEYPOINT_BOX_HALF, points + KEYPOINT_BOX_HALF], axis=1)
    probes = np.array([[0, 0], [width, 0], [0, height]], dtype=np.float32)
    return {**inputs, "bboxes": np.concatenate([boxes, riders]).astype(np.float32),
            "labels": np.concatenate([kept, len(boxes) + np.arange(len(riders))]), "keypoints": probes}


def _keypoints_from_riders(out: dict, boxes: np.ndarray, kept: np.ndarray, keypoints: np.ndarray,
                           flip_permutation: np.ndarray | None):
    """(the real boxes, their indices, the moved keypoints [G, K, 3] of all boxes) from the output."""
    count, num_keypoints = keypoints.shape[:2]
    riders = kept >= count
    moved = np.zeros((count * num_keypoints, 3), dtype=np.float32)
    flat = keypoints.reshape(-1, 3)
    rider_index = kept[riders] - count
    moved[rider_index, :2] = (boxes[riders, :2] + boxes[riders, 2:]) / 2
    moved[rider_index, 2] = flat[rider_index, 2]   # a rider dropped by a crop stays v=0
    moved = moved.reshape(count, num_keypoints, 3)
    probes = np.asarray(out["keypoints"], dtype=np.float64)[:, :2]
    edge_x, edge_y = probes[1] - probes[0], probes[2] - probes[0]
    # (W, 0) x (0, H) = W * H > 0 before; a mirror (any odd number of flips) makes it negative.
    if edge_x[0] * edge_y[1] - edge_x[1] * edge_y[0] < 0 and flip_permutation is not None:
        moved = moved[:, flip_permutation]
    return boxes[~riders], kept[~riders], moved


def _outside_unlabelled(keypoints: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Keypoints outside the image (or never labelled) as COCO's not-labelled: v=0 at 0, 0."""
    height, width = shape
    x, y = keypoints[..., 0], keypoints[..., 1]
    gone = (keypoints[..., 2] <= 0) | (x < 0) | (y < 0) | (x > width) | (y > height)
    keypoints[gone] = 0
    return keypoints
