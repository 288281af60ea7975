"""Anchors for every feature level: one size (or a list of sizes) per level, several aspect ratios.

R-CNN's RPN takes one size per level; RetinaNet takes several per level (torchvision's and
Detectron2's three octave scales 2**0, 2**(1/3), 2**(2/3)), and FCOS one point per location (a
single square "anchor" of the level's stride). A level given as a number is the one-size list, so
configs with one size per level give the same anchors as before.

`octave_scales` keeps RetinaNet's several sizes per level when a recipe or a user gives one size
per level (schedule=auto, the CPU schedules): a level given as one number x becomes
[int(x * s) for s in octave_scales], truncated as torchvision computes its RetinaNet sizes. A level
given as a list is taken as it is (Detectron2's untruncated sizes, older configs).
"""
from __future__ import annotations


from typing import Sequence

import torch
from torch import nn


def level_anchor_sizes(sizes, octave_scales: Sequence[float] | None = None) -> list[list[float]]:
    """The sizes of each level: a level given as a list as it is; one given as a number x as [x],
    or with octave_scales as [int(x * s) for s in octave_scales]."""
    def level_sizes(level) -> list[float]:
        if not isinstance(level, (int, float)):
            return [float(s) for s in level]
        if not octave_scales:
            return [float(level)]
        return [float(int(level * float(scale))) for scale in octave_scales]
    return [level_sizes(level) for level in sizes]


def flat_anchor_sizes(sizes, octave_scales: Sequence[float] | None = None) -> list[float]:
    """Every size of a config's `sizes` (a number or a list of numbers per level), in order."""
    return [s for level in level_anchor_sizes(sizes, octave_scales) for s in level]


class AnchorGenerator(nn.Module):
    """Produces the anchors of all levels, concatenated level after level, and within a level
    location-major (row, column) with the aspect ratios innermost. That order matches the
    RPN head's flattened outputs.

    octave_scales: multipliers that turn a level given as one size into several (module docstring).
    round_anchors: torchvision rounds the base (cell) anchors to integers, Detectron2 does
    not. strides: the step between anchor centres per level; None derives it as
    image_size // feature_size per level, as torchvision does (for P6 of an odd-sized P5
    this is not 64), while Detectron2 uses the fixed strides [4, 8, 16, 32, 64].
    """

    def __init__(self, sizes: Sequence[float | Sequence[float]], aspect_ratios: Sequence[float],
                 round_anchors: bool = True, strides: Sequence[int] | None = None,
                 octave_scales: Sequence[float] | None = None, max_cache_entries: int = 32):
        super().__init__()
        if strides is not None and len(strides) != len(sizes):
            raise ValueError(f"anchor strides {list(strides)} and sizes {list(sizes)} must have one entry per level.")
        # `sizes` as given (a number or a list per level); `level_sizes` each level as a list.
        self.sizes = [float(level) if isinstance(level, (int, float)) else [float(s) for s in level] for level in sizes]
        self.octave_scales = None if not octave_scales else [float(s) for s in octave_scales]
        self.level_sizes = level_anchor_sizes(self.sizes, self.octave_scales)
        counts = {len(level) for level in self.level_sizes}
        if len(counts) > 1 or 0 in counts:
            raise ValueError(f"model.anchor_generator.sizes={self.sizes}: every level needs the same number of sizes "
                             "(at least one), since one head predicts for all levels.")
        self.aspect_ratios = [float(r) for r in aspect_ratios]
        self.round_anchors = round_anchors
        self.strides = None if strides is None else [int(s) for s in strides]
        self.max_cache_entries = max_cache_entries
        self._cache: dict[tuple, list[torch.Tensor]] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.aspect_ratios) * len(self.level_sizes[0])

    def cell_anchors(self, sizes: float | Sequence[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """[A, 4] anchors centred on (0, 0) for one level's size (or sizes); height/width = aspect
        ratio, area = size**2. Ordered aspect ratio major, size minor (torchvision's order, which
        its heads' channels follow)."""
        ratios = torch.as_tensor(self.aspect_ratios, dtype=dtype, device=device)
        sizes = [sizes] if isinstance(sizes, (int, float)) else list(sizes)
        scale = torch.as_tensor(sizes, dtype=dtype, device=device)
        height_factor = torch.sqrt(ratios)
        width_factor = 1 / height_factor
        widths = (width_factor[:, None] * scale[None, :]).view(-1)
        heights = (height_factor[:, None] * scale[None, :]).view(-1)
        anchors = torch.stack([-widths, -heights, widths, heights], dim=1) / 2
        return anchors.round() if self.round_anchors else anchors

    def forward(self, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int],
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Anchors per level, each [H_l * W_l * A, 4], for a padded batch of `image_size`."""
        if len(feature_sizes) != len(self.sizes):
            raise ValueError(f"{len(feature_sizes)} feature levels but {len(self.sizes)} anchor sizes "
                             f"({self.sizes}); model.anchor_generator.sizes needs one size per FPN level.")
        device = torch.device(device)
        if torch.jit.is_tracing():
            # Traced sizes are tensors: int() would freeze them into the trace and the cache
            # would key on them, so the grid is computed from them every time.
            return self.grid_anchors(feature_sizes, image_size, dtype, device)
        feature_sizes = [(int(h), int(w)) for h, w in feature_sizes]
        image_size = (int(image_size[0]), int(image_size[1]))
        key = (tuple(feature_sizes), tuple(self.level_strides(feature_sizes, image_size)), dtype, device)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        anchors = self.grid_anchors(feature_sizes, image_size, dtype, device)
        if len(self._cache) >= self.max_cache_entries:
            self._cache.clear()
        self._cache[key] = anchors
        return anchors

    def level_strides(self, feature_sizes, image_size) -> list[tuple]:
        """(stride_y, stride_x) per level: fixed, or image size // feature size (ints or tensors)."""
        if self.strides is None:
            return [(image_size[0] // h, image_size[1] // w) for h, w in feature_sizes]
        return [(s, s) for s in self.strides]

    def grid_anchors(self, feature_sizes, image_size, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        """Anchors per level for feature sizes and an image size given as ints or (traced) tensors."""
        anchors = []
        strides = self.level_strides(feature_sizes, image_size)
        for (height, width), (stride_y, stride_x), size in zip(feature_sizes, strides, self.level_sizes):
            shift_x = torch.arange(width, dtype=torch.int64, device=device) * stride_x
            shift_y = torch.arange(height, dtype=torch.int64, device=device) * stride_y
            grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
            grid_x, grid_y = grid_x.reshape(-1), grid_y.reshape(-1)
            shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=1)
            cell = self.cell_anchors(size, dtype, device)
            anchors.append((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4))
        return anchors
