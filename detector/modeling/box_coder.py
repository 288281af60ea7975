"""Encoding boxes as deltas relative to reference boxes, and back (R-CNN parameterization)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

# Largest log-scale a predicted delta may apply: exp() of anything bigger overflows in
# practice, and no object is 1000/16 times larger than its anchor.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """deltas = (wx*dx/w, wy*dy/h, ww*log(w'/w), wh*log(h'/h)) with widths x2 - x1."""

    def __init__(self, weights: Sequence[float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"box coder weights must be 4 numbers (wx, wy, ww, wh), got {list(weights)}.")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, targets: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """targets, references: [N, 4] xyxy -> deltas [N, 4]."""
        wx, wy, ww, wh = self.weights
        ref_w = references[:, 2] - references[:, 0]
        ref_h = references[:, 3] - references[:, 1]
        ref_cx = references[:, 0] + 0.5 * ref_w
        ref_cy = references[:, 1] + 0.5 * ref_h
        tgt_w = targets[:, 2] - targets[:, 0]
        tgt_h = targets[:, 3] - targets[:, 1]
        tgt_cx = targets[:, 0] + 0.5 * tgt_w
        tgt_cy = targets[:, 1] + 0.5 * tgt_h
        dx = wx * (tgt_cx - ref_cx) / ref_w
        dy = wy * (tgt_cy - ref_cy) / ref_h
        dw = ww * torch.log(tgt_w / ref_w)
        dh = wh * torch.log(tgt_h / ref_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """deltas [N, 4*k] (k boxes per reference, e.g. one per class), references [N, 4]
        -> boxes [N, k, 4] xyxy."""
        references = references.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths = references[:, 2] - references[:, 0]
        heights = references[:, 3] - references[:, 1]
        ctr_x = references[:, 0] + 0.5 * widths
        ctr_y = references[:, 1] + 0.5 * heights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)
        pred_cx = dx * widths[:, None] + ctr_x[:, None]
        pred_cy = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        return torch.stack((pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h), dim=2)
