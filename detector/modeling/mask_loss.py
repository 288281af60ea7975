"""Mask R-CNN's training signal: each positive proposal's target mask (its ground truth cropped
to the proposal and resized) and the per-pixel binary cross-entropy against the predicted
mask of the ground-truth class. Functions of tensors only, so the plain and the cascade mask
branches share them and tests compare them with torchvision's directly.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align as torchvision_roi_align


def check_mask_targets(targets: Sequence[dict]) -> None:
    """Targets a mask loss can use: "masks" [N, H, W], one per box; the error says what to change."""
    for i, target in enumerate(targets):
        if "masks" not in target:
            raise ValueError(f"target {i} has no 'masks': a mask model trains on instance masks. Use a dataset "
                             "with segmentations (COCO polygons/RLE, shapes), or a box-only model "
                             "(model=faster_rcnn_fpn).")
        masks, boxes = target["masks"], target["boxes"]
        if masks.dim() != 3 or masks.shape[0] != boxes.shape[0]:
            raise ValueError(f"target {i}: 'masks' must be [N, H, W] with one mask per box; got shape "
                             f"{tuple(masks.shape)} for {boxes.shape[0]} boxes.")


@torch.no_grad()
def project_masks_on_boxes(gt_masks: torch.Tensor, boxes: torch.Tensor, matched_gt: torch.Tensor,
                           size: int) -> torch.Tensor:
    """The training target of each proposal: its ground-truth mask ([G, H, W], in image pixels)
    cropped to the proposal box [P, 4] and resized to size x size by RoIAlign (adaptive sampling,
    not pixel-aligned, as torchvision). Soft values in [0, 1]: [P, size, size]."""
    rois = torch.cat([matched_gt.to(boxes.dtype)[:, None], boxes], dim=1)
    masks = gt_masks[:, None].to(boxes.dtype)
    return torchvision_roi_align(masks, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=False)[:, 0]


def mask_loss(mask_logits: torch.Tensor, proposals: Sequence[torch.Tensor], gt_masks: Sequence[torch.Tensor],
              gt_labels: Sequence[torch.Tensor], matched_gt: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy of the ground-truth class's logits [P, K+1, S, S]
    against the projected ground-truth masks. proposals, matched_gt: the positive proposals of
    each image and the index of their ground truth."""
    size = mask_logits.shape[-1]
    labels = torch.cat([image_labels[index] for image_labels, index in zip(gt_labels, matched_gt)])
    targets = torch.cat([project_masks_on_boxes(masks, boxes, index, size)
                         for masks, boxes, index in zip(gt_masks, proposals, matched_gt)])
    if targets.numel() == 0:
        # No positive proposal: a zero that still reaches every mask parameter.
        return mask_logits.sum() * 0
    chosen = mask_logits[torch.arange(len(labels), device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(chosen, targets.to(chosen.dtype))
