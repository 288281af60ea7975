"""Mask R-CNN's mask branch, the part that sits on top of any box branch (plain or cascade): its
pooler, head and predictor built from the config (`mask_branch`), the masks of the positive
proposals in training and of the detections at test time (the MaskBranch mixin).

Both RoI-heads families with masks (mask_roi_heads, cascade) mix it in, so the mask path is
written once. Pasting the predicted masks into the image is detector.modeling.mask_paste's (the
model does it once the boxes are in the input's pixels, the way the branch's `mask_paste` names).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from detector.instantiate import instantiate
from detector.modeling.box_branch import BoxBranchKeys
from detector.modeling.mask_head import MaskPredictor
from detector.modeling.mask_loss import mask_loss
from detector.modeling.poolers import MultiLevelRoIAlign


def mask_probabilities(mask_logits: torch.Tensor, labels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Sigmoid of each detection's own class channel, split per image: [N_i, 1, S, S] each."""
    all_labels = torch.cat(list(labels))
    # shape[0], not len(): a traced arange or split would freeze the example's detection count
    # (detector.export); one image needs no split.
    chosen = mask_logits[torch.arange(all_labels.shape[0], device=all_labels.device), all_labels]
    probabilities = chosen.sigmoid()[:, None]
    return [probabilities] if len(labels) == 1 else list(probabilities.split([len(x) for x in labels]))


class MaskBranch:
    """Mask training and inference on top of any box branch (plain or cascade). The owner is an
    nn.Module with `mask_pooler`, `mask_head` and `mask_predictor` attributes, and `mask_paste`:
    how the model pastes this branch's masks into the image (detector.modeling.mask_paste;
    "detectron2" for Detectron2's weights, whose masks were learned on the box's own grid)."""

    mask_pooler: MultiLevelRoIAlign
    mask_head: nn.Module
    mask_predictor: nn.Module
    mask_paste: str

    def mask_logits(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.mask_predictor(self.mask_head(self.mask_pooler(features, boxes))).float()

    def mask_training_loss(self, features: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor],
                           labels: Sequence[torch.Tensor], matched_gt: Sequence[torch.Tensor],
                           targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        """loss_mask over the positive (label > 0) sampled proposals of each image."""
        positives, positive_gt = [], []
        for image_proposals, image_labels, image_matches in zip(proposals, labels, matched_gt):
            keep = torch.nonzero(image_labels > 0, as_tuple=True)[0]
            positives.append(image_proposals[keep])
            positive_gt.append(image_matches[keep])
        logits = self.mask_logits(features, positives)
        loss = mask_loss(logits, positives, [t["masks"] for t in targets], [t["labels"] for t in targets],
                         positive_gt)
        return {"loss_mask": loss}

    def add_masks(self, features: Sequence[torch.Tensor], detections: list[dict]) -> list[dict]:
        """Adds "masks" [N, 1, M, M] (probabilities in box coordinates) to each image's detections;
        the model pastes them into the input image once the boxes are in its pixels."""
        logits = self.mask_logits(features, [d["boxes"] for d in detections])
        for d, probabilities in zip(detections, mask_probabilities(logits, [d["labels"] for d in detections])):
            d["masks"] = probabilities
        return detections


def mask_branch(in_channels: int, strides: Sequence[int], num_classes: int, mask_head: Mapping[str, Any],
                mask_pooler_resolution: int, mask_deconv_dim: int, box: BoxBranchKeys) -> dict[str, nn.Module]:
    """mask_pooler, mask_head (built from its config node, given in_channels) and mask_predictor,
    as keyword arguments for MaskRoIHeads or CascadeRoIHeads. The pooler samples like the box
    pooler, at its own resolution; the predictor has the box predictor's layout."""
    head = instantiate(mask_head, in_channels=in_channels)
    return {
        "mask_pooler": box.pooler(strides, mask_pooler_resolution),
        "mask_head": head,
        "mask_predictor": MaskPredictor(head.out_channels, num_classes, mask_deconv_dim, box.predictor_layout),
    }
