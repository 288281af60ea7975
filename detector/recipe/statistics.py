"""The figures of a training split the recipe decides from: image sizes, box sizes and aspect
ratios, boxes per image, images per class. Read from the records of any format's index
(detector.data.build.build_index), so every layout gives the same figures."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SplitStatistics:
    """Per image: shortest and longest edge (px), boxes; per box: sqrt(area) as a fraction of
    its image's shortest edge (so it scales with any resize), aspect ratio height / width."""
    image_short: np.ndarray        # [N] px
    image_long: np.ndarray         # [N] px
    boxes_per_image: np.ndarray    # [N]
    relative_box_size: np.ndarray  # [B] sqrt(w * h) / image shortest edge
    box_aspect_ratio: np.ndarray   # [B] h / w
    images_per_class: dict[int, int]

    @property
    def num_images(self) -> int:
        return int(len(self.image_short))

    @property
    def num_boxes(self) -> int:
        return int(len(self.relative_box_size))


def split_statistics(records: Sequence) -> SplitStatistics:
    """The figures of index records (each with width, height, boxes [M, 4] x1y1x2y2, labels)."""
    short, long_, counts, sizes, ratios = [], [], [], [], []
    images_per_class: dict[int, int] = {}
    for record in records:
        width, height = max(1, int(record.width)), max(1, int(record.height))
        boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
        short.append(min(width, height))
        long_.append(max(width, height))
        counts.append(len(boxes))
        if len(boxes):
            w = np.clip(boxes[:, 2] - boxes[:, 0], 1e-3, None)
            h = np.clip(boxes[:, 3] - boxes[:, 1], 1e-3, None)
            sizes.append(np.sqrt(w * h) / min(width, height))
            ratios.append(h / w)
        for label in set(np.asarray(record.labels, dtype=np.int64).reshape(-1).tolist()):
            images_per_class[label] = images_per_class.get(label, 0) + 1
    empty = np.zeros(0)
    return SplitStatistics(np.asarray(short, float), np.asarray(long_, float), np.asarray(counts, float),
                           np.concatenate(sizes) if sizes else empty, np.concatenate(ratios) if ratios else empty,
                           dict(sorted(images_per_class.items())))
