"""The training augmentation: a list of albumentations transforms in the config (conf/aug/).

The default: shortest-edge resize to a size picked per image, capped by a longest-edge
maximum (ShortestEdgeResize), then a horizontal flip; any albumentations transform can be
added to the list. Boxes (and a mask model's instance masks) move with the image, boxes
are clipped to it, and boxes thinner than `aug.min_box_size` pixels afterwards are dropped
with their masks (the model's box coder divides by box width and height). Testing needs no transform: the model resizes in eval mode.
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


def detection_compose(steps: Sequence) -> A.Compose:
    """Albumentations `steps` as one pipeline that moves xyxy pixel boxes (with their labels)."""
    return A.Compose(list(steps), bbox_params=A.BboxParams(**BBOX_PARAMS))


def build_augmentation(nodes) -> A.Compose:
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
    return detection_compose(steps)


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
                    seed: int, min_box_size: float = 1.0, masks: np.ndarray | None = None):
    """Run `transform` with its randomness fixed by `seed`; returns (image, boxes, labels), and
    (image, boxes, labels, masks) when instance `masks` (uint8 [G, H, W], one per box) are given.

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
    if transform is not None:
        transform.set_random_seed(seed)
        inputs = {"image": image, "bboxes": boxes, "labels": kept}
        if masks is not None and len(masks):
            inputs["masks"] = masks
        out = transform(**inputs)
        image = out["image"]
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        kept = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        if "masks" in inputs:
            masks = np.asarray(out["masks"], dtype=np.uint8).reshape(-1, *image.shape[:2])[kept]
    height, width = image.shape[:2]
    if masks is not None and not len(masks):
        masks = np.zeros((0, height, width), dtype=np.uint8)
    boxes = boxes.astype(np.float32, copy=True)
    boxes = clip_to_image(boxes, (height, width))
    keep = box_sizes_at_least(boxes, min_box_size)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)[kept]
    if masks is None:
        return image, boxes[keep], labels[keep]
    return image, boxes[keep], labels[keep], masks[keep]
