"""Mask R-CNN's mask branch: a small FCN on 14x14 RoIAlign features predicting one 28x28 mask
per class, and its training targets and loss. Pasting the predicted masks into the image is
detector.modeling.mask_paste's (the model does it once the boxes are in the input's pixels, the
way the branch's `mask_paste` names).

Module layout follows torchvision's maskrcnn_resnet50_fpn(_v2), so its state dict loads 1:1:
`roi_heads.mask_head.{i}.0.*` (conv i, plus `{i}.1.*` for v2's BatchNorm) and
`roi_heads.mask_predictor.{conv5_mask,mask_fcn_logits}.*`. Detectron2's MaskRCNNConvUpsampleHead
maps as mask_fcn{i+1} -> mask_head.{i}.0 (its GN: `.norm` -> `.1`), deconv -> conv5_mask and
predictor -> mask_fcn_logits (layout "detectron2": K outputs, no background).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou
from torchvision.ops import roi_align as torchvision_roi_align

from detector.modeling.backbone.norm import NORM_CHOICES, conv_norm, make_norm
from detector.modeling.mask_paste import check_mask_paste
from detector.modeling.poolers import MultiLevelRoIAlign
from detector.modeling.roi_heads import PREDICTOR_LAYOUTS, RoIHeads


class MaskHead(nn.Sequential):
    """`num_convs` 3x3 convolutions with ReLU (each optionally followed by a norm: "bn" is
    torchvision's v2, "gn" Detectron2's GN recipes). Block i is Sequential(conv, [norm,] ReLU)."""

    def __init__(self, in_channels: int = 256, conv_dim: int = 256, num_convs: int = 4, dilation: int = 1,
                 norm: str = "", fold_norms: bool = True):
        if norm != "" and norm not in NORM_CHOICES:
            raise ValueError(f"model.roi_heads.mask_conv_norm='{norm}' is not supported; valid choices: '' (none), "
                             f"{', '.join(NORM_CHOICES)}.")
        blocks = []
        channels = in_channels
        for _ in range(num_convs):
            layers: list[nn.Module] = [nn.Conv2d(channels, conv_dim, 3, padding=dilation, dilation=dilation,
                                                 bias=norm == "")]
            if norm:
                layers.append(make_norm(norm, conv_dim))
            layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
            channels = conv_dim
        super().__init__(*blocks)
        self.out_channels = channels
        # Norms in eval mode folded into the convolutions (see norm.conv_norm); False keeps
        # torchvision's order of operations, for parity tests.
        self.fold_norms = fold_norms
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            if len(block) == 3:
                x = conv_norm(block[0], block[1], x, self.fold_norms, relu=True)
            else:
                x = F.relu(block[0](x), inplace=True)
        return x


class MaskPredictor(nn.Sequential):
    """A 2x2 stride-2 transposed convolution with ReLU (14x14 -> 28x28), then 1x1 class logits.

    layout "torchvision": K+1 output channels, background at 0 (never trained or used).
    layout "detectron2": K channels, one per foreground class. Either way `forward` returns
    [R, K+1, 2S, 2S] logits indexed by the class label (1..K), as the box predictor does."""

    def __init__(self, in_channels: int, num_classes: int, deconv_dim: int = 256, layout: str = "torchvision"):
        if layout not in PREDICTOR_LAYOUTS:
            raise ValueError(f"model.roi_heads.predictor_layout='{layout}'; valid choices: {', '.join(PREDICTOR_LAYOUTS)}.")
        outputs = num_classes + 1 if layout == "torchvision" else num_classes
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(in_channels, deconv_dim, 2, stride=2)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(deconv_dim, outputs, 1)),
        ]))
        self.num_classes = num_classes
        self.layout = layout
        nn.init.kaiming_normal_(self.conv5_mask.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv5_mask.bias)
        # Small logits at the start: every mask begins near 0.5 (Detectron2's choice).
        nn.init.normal_(self.mask_fcn_logits.weight, std=0.001)
        nn.init.zeros_(self.mask_fcn_logits.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if self.layout == "detectron2":
            # A background channel of zeros keeps the label-indexed layout.
            logits = torch.cat([logits.new_zeros((logits.shape[0], 1) + logits.shape[2:]), logits], dim=1)
        return logits


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


def check_mask_targets(targets: Sequence[dict]) -> None:
    for i, target in enumerate(targets):
        if "masks" not in target:
            raise ValueError(f"target {i} has no 'masks': a mask model trains on instance masks. Use a dataset "
                             "with segmentations (COCO polygons/RLE, shapes), or a box-only model "
                             "(model=faster_rcnn_fpn).")
        masks, boxes = target["masks"], target["boxes"]
        if masks.dim() != 3 or masks.shape[0] != boxes.shape[0]:
            raise ValueError(f"target {i}: 'masks' must be [N, H, W] with one mask per box; got shape "
                             f"{tuple(masks.shape)} for {boxes.shape[0]} boxes.")


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


def mask_branch(in_channels: int, strides: Sequence[int], num_classes: int, mask_head: Mapping[str, Any],
                mask_pooler_resolution: int, mask_deconv_dim: int, pooler_sampling_ratio: int, pooler_aligned: bool,
                canonical_box_size: int, canonical_level: int, predictor_layout: str) -> dict[str, nn.Module]:
    """mask_pooler, mask_head (built from its config node, given in_channels) and mask_predictor,
    as keyword arguments for MaskRoIHeads or CascadeRoIHeads. The pooler samples like the box
    pooler, at its own resolution."""
    from detector.instantiate import instantiate

    head = instantiate(mask_head, in_channels=in_channels)
    return {
        "mask_pooler": MultiLevelRoIAlign(mask_pooler_resolution, list(strides), pooler_sampling_ratio, pooler_aligned,
                                          canonical_box_size, canonical_level),
        "mask_head": head,
        "mask_predictor": MaskPredictor(head.out_channels, num_classes, mask_deconv_dim, predictor_layout),
    }


def mask_roi_heads(in_channels: int, strides: Sequence[int], num_classes: int, mask_head: Mapping[str, Any],
                   mask_pooler_resolution: int, mask_deconv_dim: int, mask_paste: str = "torchvision",
                   **box_keys) -> MaskRoIHeads:
    """model.roi_heads of Mask R-CNN: every key of the box branch (see
    detector.modeling.build.standard_roi_heads) plus the mask branch's `mask_head` node,
    mask_pooler_resolution (14), mask_deconv_dim (256) and mask_paste (conf/model/mask_rcnn_fpn.yaml
    sets it; a config composed without it, or stored before it existed, pastes the torchvision way)."""
    from detector.modeling.build import standard_roi_heads

    box = standard_roi_heads(in_channels=in_channels, strides=strides, num_classes=num_classes, **box_keys)
    branch = mask_branch(in_channels, strides, num_classes, mask_head, mask_pooler_resolution, mask_deconv_dim,
                         *(box_keys[k] for k in ("pooler_sampling_ratio", "pooler_aligned", "canonical_box_size",
                                                 "canonical_level", "predictor_layout")))
    return MaskRoIHeads.from_box_heads(box, **branch, mask_paste=mask_paste)
