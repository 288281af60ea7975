"""Box regression losses shared by the RPN and the RoI heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F

BOX_LOSS_CHOICES = ("smooth_l1", "l1")


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """Summed (not averaged) loss; callers divide by their own normalizer."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    raise ValueError(f"Unknown box loss '{kind}'. Valid choices: {', '.join(BOX_LOSS_CHOICES)}.")
