"""Albumentations pipelines built from plain arguments (see conf/aug/).

Training: shortest-edge resize to a size picked per image, capped by a longest-edge
maximum, horizontal flip, optional photometric jitter. Boxes move with the image, are
clipped to it, and boxes thinner than `min_box_size` pixels afterwards are dropped (the
model's box coder divides by box width and height). Testing needs no transform: the
model resizes in eval mode.
"""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np


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


def build_train_transform(
    min_sizes: Sequence[int],
    max_size: int,
    hflip_prob: float = 0.5,
    color_jitter: bool = False,
    color_jitter_strength: float = 0.2,
) -> A.Compose:
    steps = [ShortestEdgeResize(min_sizes, max_size), A.HorizontalFlip(p=hflip_prob)]
    if color_jitter:
        s = color_jitter_strength
        steps.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4), p=0.8))
    # Boxes are clipped and filtered by `apply_transform` itself, so nothing is silently
    # rejected inside albumentations.
    return A.Compose(steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True))


def apply_transform(transform: A.Compose | None, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    seed: int, min_box_size: float = 1.0):
    """Run `transform` with its randomness fixed by `seed`; returns (image, boxes, labels).

    Seeding per call (not per worker) is what makes a sample's augmentation a function
    of its position in the training stream, whatever the number of workers.
    """
    if transform is not None:
        transform.set_random_seed(seed)
        out = transform(image=image, bboxes=boxes.reshape(-1, 4), labels=labels)
        image = out["image"]
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
    height, width = image.shape[:2]
    boxes = boxes.astype(np.float32, copy=True)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_box_size)
    return image, boxes[keep], labels[keep]
