"""The losses of the one-stage detectors, on torchvision.ops' implementations.

Classification: the sigmoid focal loss (Lin et al.), one binary classifier per class, so the
background is "no class fires" and the tens of thousands of easy negatives per image are damped
by (1 - p)**gamma. Boxes: L1 or smooth L1 on the R-CNN deltas (RetinaNet v1, Detectron2's beta
0.1) or the GIoU loss on decoded boxes (RetinaNet v2, FCOS). All sums: callers divide by their
normaliser (the number of foreground anchors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

DENSE_BOX_LOSSES = ("l1", "smooth_l1", "giou")


def focal_loss_sum(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Summed sigmoid focal loss of logits [..., K] against 0/1 targets of the same shape."""
    return sigmoid_focal_loss(logits.float(), targets.float(), alpha=alpha, gamma=gamma, reduction="sum")


def box_loss_sum(kind: str, predicted: torch.Tensor, anchors: torch.Tensor, gt_boxes: torch.Tensor, encode, decode,
                 smooth_l1_beta: float) -> torch.Tensor:
    """Summed box loss of the foreground anchors: `predicted` [M, 4] head outputs, `anchors` and
    their matched `gt_boxes` [M, 4]; encode(gt, anchors) and decode(outputs, anchors) are the
    model's box parameterisation."""
    predicted = predicted.float()
    if kind == "giou":
        return generalized_box_iou_loss(decode(predicted, anchors), gt_boxes, reduction="sum", eps=1e-7)
    target = encode(gt_boxes, anchors)
    if kind == "l1":
        return F.l1_loss(predicted, target, reduction="sum")
    if kind == "smooth_l1":
        return F.smooth_l1_loss(predicted, target, beta=smooth_l1_beta, reduction="sum")
    raise ValueError(f"model.head box loss '{kind}' is not supported; valid choices: {', '.join(DENSE_BOX_LOSSES)}.")
