"""Assigning each prediction (anchor or proposal) to a ground-truth box by IoU."""
from __future__ import annotations

import torch


class Matcher:
    """For a [num_gt, num_pred] IoU matrix returns, per prediction, the index of its best
    ground truth, or BELOW_LOW_THRESHOLD (negative) / BETWEEN_THRESHOLDS (ignored).

    allow_low_quality_matches: a ground truth whose best IoU is under the high threshold
    still gets the prediction(s) that overlap it most, so every object has a positive.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"matcher low threshold {low_threshold} is above the high threshold {high_threshold}.")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: torch.Tensor) -> torch.Tensor:
        if iou.numel() == 0:
            if iou.shape[0] == 0:
                return torch.full((iou.shape[1],), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=iou.device)
            raise ValueError("cannot match: there are ground-truth boxes but no predictions.")
        best_iou, matches = iou.max(dim=0)
        original = matches.clone() if self.allow_low_quality_matches else None
        matches[best_iou < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[(best_iou >= self.low_threshold) & (best_iou < self.high_threshold)] = self.BETWEEN_THRESHOLDS
        if original is not None:
            # Every prediction tied for a ground truth's highest IoU keeps that match.
            best_per_gt = iou.max(dim=1).values
            _, pred_index = torch.nonzero(iou == best_per_gt[:, None], as_tuple=True)
            matches[pred_index] = original[pred_index]
        return matches
