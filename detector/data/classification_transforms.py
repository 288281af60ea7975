"""The albumentations pipelines of image classification: random resized crops, flips and colour
jitter for training, a plain resize for testing, both ending in normalisation.

Separate from the dataset, which only seeds and applies them, so the recipe of the
augmentation is read in one place and tested without any files.
"""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch


def build_cls_train_transform(image_size: int, scale: Sequence[float] = (0.6, 1.0), hflip_prob: float = 0.5,
                              vflip_prob: float = 0.0, rotate90: bool = False, color_jitter: bool = False,
                              color_jitter_strength: float = 0.2, mean: Sequence[float] = (0.485, 0.456, 0.406),
                              std: Sequence[float] = (0.229, 0.224, 0.225)) -> A.Compose:
    """Random resized crop to image_size x image_size, flips, optional 90-degree turns and
    colour jitter, then normalisation with `mean`/`std` (on the [0, 1] scale)."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"data.aug.scale={list(scale)} must satisfy 0 < min <= max <= 1.")
    steps = [A.RandomResizedCrop(size=(int(image_size), int(image_size)), scale=tuple(float(s) for s in scale),
                                 interpolation=cv2.INTER_LINEAR), A.HorizontalFlip(p=hflip_prob)]
    if vflip_prob > 0:
        steps.append(A.VerticalFlip(p=vflip_prob))
    if rotate90:
        steps.append(A.RandomRotate90(p=1.0))
    if color_jitter:
        s = color_jitter_strength
        steps.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4), p=0.8))
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    return A.Compose(steps)


def build_cls_test_transform(image_size: int, mean: Sequence[float] = (0.485, 0.456, 0.406),
                             std: Sequence[float] = (0.229, 0.224, 0.225)) -> A.Compose:
    """Resize to image_size x image_size (the whole object, as the training crops at scale 1) and normalise."""
    return A.Compose([A.Resize(int(image_size), int(image_size), interpolation=cv2.INTER_LINEAR),
                      A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)])


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
