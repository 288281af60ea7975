"""RoIAlign over a feature pyramid: each box is pooled from the level matching its size."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import box_area

from detector.modeling.roi_align import roi_align


class MultiLevelRoIAlign(nn.Module):
    """A box of size sqrt(area) = s goes to level floor(canonical_level + log2(s / canonical_size)),
    clamped to the available levels (the FPN paper's mapping: a 224x224 box lands on P4).

    strides: stride of each pooled feature level, finest first (e.g. 4, 8, 16, 32).
    aligned: shift sampling points by half a pixel (Detectron2's ROIAlignV2); torchvision's
    detection models use aligned=False.
    """

    def __init__(self, output_size: int, strides: Sequence[int], sampling_ratio: int = 2, aligned: bool = False,
                 canonical_size: float = 224.0, canonical_level: int = 4, eps: float = 1e-6):
        super().__init__()
        self.output_size = (int(output_size), int(output_size))
        self.scales = [1.0 / s for s in strides]
        levels = [math.log2(s) for s in strides]
        if any(abs(lv - round(lv)) > 1e-6 for lv in levels):
            raise ValueError(f"pooler strides must be powers of two, got {list(strides)}.")
        self.min_level = int(round(levels[0]))
        self.max_level = int(round(levels[-1]))
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_size = canonical_size
        self.canonical_level = canonical_level
        self.eps = eps

    def assign_levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """Index into the pooled levels (0 = finest) for each box [R, 4]."""
        sizes = torch.sqrt(box_area(boxes))
        levels = torch.floor(self.canonical_level + torch.log2(sizes / self.canonical_size) + self.eps)
        levels = torch.clamp(levels, min=self.min_level, max=self.max_level)
        return levels.to(torch.int64) - self.min_level

    def forward(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """features: one [N, C, H, W] tensor per level; boxes: one [R_i, 4] per image.
        Returns [sum R_i, C, out, out] in the order of the concatenated boxes."""
        if len(features) != len(self.scales):
            raise ValueError(f"pooler got {len(features)} feature levels, expected {len(self.scales)}.")
        all_boxes = torch.cat(list(boxes), dim=0)
        # full_like, not full((len(b), 1)): a traced len() would freeze the box count.
        image_index = torch.cat([torch.full_like(b[:, :1], i, dtype=all_boxes.dtype) for i, b in enumerate(boxes)],
                                dim=0)
        rois = torch.cat([image_index, all_boxes], dim=1)
        channels = features[0].shape[1]
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio, self.aligned)
        levels = self.assign_levels(all_boxes)
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            index = torch.nonzero(levels == level, as_tuple=True)[0]
            if index.numel() == 0 and not torch.jit.is_tracing():   # a trace must pool every level
                continue
            pooled.append(roi_align(feature, rois[index], self.output_size, scale, self.sampling_ratio,
                                    self.aligned).to(features[0].dtype))
            order.append(index)
        if not pooled:
            return features[0].new_zeros((0, channels) + self.output_size)
        # Back into box order: each box occurs in exactly one level, so sorting the concatenated
        # indices inverts the split (a gather, which exports, unlike writing into a buffer).
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]
