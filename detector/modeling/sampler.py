"""Sampling a fixed-size, class-balanced mini-batch of predictions for the losses."""
from __future__ import annotations

import torch


class BalancedSampler:
    """From per-prediction labels (>= 1 positive, 0 negative, -1 ignored) draws at most
    `batch_size * positive_fraction` positives and fills the rest with negatives."""

    def __init__(self, batch_size: int, positive_fraction: float):
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}.")
        self.batch_size = batch_size
        self.positive_fraction = positive_fraction

    def __call__(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [N] -> (positive indices, negative indices)."""
        positive = torch.nonzero(labels >= 1, as_tuple=True)[0]
        negative = torch.nonzero(labels == 0, as_tuple=True)[0]
        num_pos = min(positive.numel(), int(self.batch_size * self.positive_fraction))
        num_neg = min(negative.numel(), self.batch_size - num_pos)
        pos_pick = torch.randperm(positive.numel(), device=labels.device)[:num_pos]
        neg_pick = torch.randperm(negative.numel(), device=labels.device)[:num_neg]
        return positive[pos_pick], negative[neg_pick]
