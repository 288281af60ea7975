"""Encoding boxes as deltas relative to reference boxes, and back (R-CNN parameterization)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from detector.modeling.boxes import decode_boxes, encode_boxes

# Largest log-scale a predicted delta may apply: exp() of anything bigger overflows in
# practice, and no object is 1000/16 times larger than its anchor.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """The weights of detector.modeling.boxes.encode_boxes/decode_boxes:
    deltas = (wx*dx/w, wy*dy/h, ww*log(w'/w), wh*log(h'/h)) with widths x2 - x1."""

    def __init__(self, weights: Sequence[float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"box coder weights must be 4 numbers (wx, wy, ww, wh), got {list(weights)}.")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, targets: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """targets, references: [N, 4] xyxy -> deltas [N, 4]."""
        return encode_boxes(targets, references, self.weights)

    def decode(self, deltas: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """deltas [N, 4*k] (k boxes per reference, e.g. one per class), references [N, 4]
        -> boxes [N, k, 4] xyxy."""
        return decode_boxes(deltas, references, self.weights, self.scale_clamp)
