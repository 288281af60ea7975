"""Mask R-CNN's RoI heads: the plain box branch (detector.modeling.roi_heads) plus the mask
branch (detector.modeling.mask_branch), and the family's builder, `mask_roi_heads`.

A family of its own beside the plain and the cascade ones, built by the same convention
(detector.modeling.build): the model builder's in_channels, strides and num_classes, the head
nodes, the family's keys, then the box branch's keys.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torchvision.ops import box_iou

from detector.modeling.box_branch import BoxBranchKeys
from detector.modeling.mask_branch import MaskBranch, mask_branch
from detector.modeling.mask_loss import check_mask_targets
from detector.modeling.mask_paste import check_mask_paste
from detector.modeling.poolers import MultiLevelRoIAlign
from detector.modeling.roi_heads import RoIHeads, standard_roi_heads


class MaskRoIHeads(MaskBranch, RoIHeads):
    """RoIHeads plus a mask branch on its own (14x14) multi-level RoIAlign: `loss_mask` in training
    from the positive sampled proposals, "masks" [N, 1, 28, 28] probabilities per detection at
    test time (pasted into the input image by the model, the `mask_paste` way: torchvision's or
    detectron2's). Targets need "masks" [G, H, W]."""

    def __init__(self, pooler: MultiLevelRoIAlign, box_head: nn.Module, box_predictor: nn.Module, box_coder,
                 matcher, sampler, mask_pooler: MultiLevelRoIAlign, mask_head: nn.Module, mask_predictor: nn.Module,
                 mask_paste: str = "torchvision", **box_options):
        super().__init__(pooler, box_head, box_predictor, box_coder, matcher, sampler, **box_options)
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        self.mask_paste = check_mask_paste(mask_paste)

    @classmethod
    def from_box_heads(cls, box: RoIHeads, mask_pooler: MultiLevelRoIAlign, mask_head: nn.Module,
                       mask_predictor: nn.Module, mask_paste: str = "torchvision") -> "MaskRoIHeads":
        """The box branch of `box` (its modules and settings, shared) plus a mask branch."""
        return cls(box.pooler, box.box_head, box.box_predictor, box.box_coder, box.matcher, box.sampler,
                   mask_pooler, mask_head, mask_predictor, mask_paste, score_thresh=box.score_thresh,
                   nms_thresh=box.nms_thresh, detections_per_img=box.detections_per_img,
                   min_box_size=box.min_box_size, box_loss=box.box_loss, smooth_l1_beta=box.smooth_l1_beta)

    def forward(self, features: Sequence[torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: Sequence[tuple[int, int]], targets: Sequence[dict] | None = None):
        if not self.training:
            detections, _ = super().forward(features, proposals, image_sizes)
            return self.add_masks(features, detections), {}
        if targets is None:
            raise ValueError("the RoI heads need targets in training mode.")
        check_mask_targets(targets)
        proposals, labels, regression_targets = self.sample_proposals(proposals, targets)
        logits, deltas = self.box_predictor(self.box_head(self.pooler(features, proposals)))
        losses = self.losses(logits.float(), deltas.float(), labels, regression_targets)
        image_labels = labels.split([len(p) for p in proposals])
        matched = [self.matched_ground_truth(p, l, t) for p, l, t in zip(proposals, image_labels, targets)]
        losses.update(self.mask_training_loss(features, proposals, image_labels, matched, targets))
        return [], losses

    @torch.no_grad()
    def matched_ground_truth(self, proposals: torch.Tensor, labels: torch.Tensor, target: dict) -> torch.Tensor:
        """Index of the ground truth each positive sampled proposal was matched to (-1 elsewhere).
        The matcher decides each proposal from its own IoU column, so matching again gives the
        sampler's assignment without changing RoIHeads.sample_proposals."""
        matched = torch.full((len(proposals),), -1, dtype=torch.int64, device=proposals.device)
        positive = torch.nonzero(labels > 0, as_tuple=True)[0]
        if positive.numel() > 0:
            gt_boxes = target["boxes"].to(proposals.dtype)
            matched[positive] = self.matcher(box_iou(gt_boxes, proposals[positive]))
        return matched


def mask_roi_heads(in_channels: int, strides: Sequence[int], num_classes: int, box_head: Mapping[str, Any],
                   mask_head: Mapping[str, Any], mask_pooler_resolution: int, mask_deconv_dim: int,
                   mask_paste: str = "torchvision", **box_keys) -> MaskRoIHeads:
    """model.roi_heads of Mask R-CNN: the plain family's (standard_roi_heads, with the same
    box_head node and box keys) plus the mask branch's `mask_head` node, mask_pooler_resolution
    (14), mask_deconv_dim (256) and mask_paste (conf/model/mask_rcnn_fpn.yaml sets it; a config
    composed without it, or stored before it existed, pastes the torchvision way)."""
    box = standard_roi_heads(in_channels, strides, num_classes, box_head, **box_keys)
    branch = mask_branch(in_channels, strides, num_classes, mask_head, mask_pooler_resolution, mask_deconv_dim,
                         BoxBranchKeys.read(box_keys))
    return MaskRoIHeads.from_box_heads(box, **branch, mask_paste=mask_paste)
