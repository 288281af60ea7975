"""FCOS (Tian et al., "FCOS: A Simple and Strong Anchor-free Object Detector"), as torchvision's
fcos_resnet50_fpn: each location of P3..P7 is a point that predicts K class logits, its distances
to the four box edges (in units of the level's stride) and a centerness logit.

Targets (torchvision's rules): a point is positive for a box when it lies inside the box, within
`center_sampling_radius` strides of its centre, and its largest distance to an edge falls in
the level's range ([4, 8] strides; no lower bound on P3, no upper on P7); a point claimed by
several boxes takes the smallest. Losses: focal (classification), GIoU (boxes) and binary cross
entropy on the centerness sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), each summed over
the batch and divided by its number of positive points. Scores: sqrt(class probability x
centerness probability).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from detector.instantiate import instantiate
from detector.modeling.dense_detector import DenseDetector
from detector.modeling.dense_losses import focal_loss_sum
from torchvision.ops import generalized_box_iou_loss


def encode_ltrb(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Distances (left, top, right, bottom) from each anchor's centre to its box's edges, in units
    of the anchor's width and height (torchvision's BoxLinearCoder, normalize_by_size)."""
    center_x = 0.5 * (anchors[..., 0] + anchors[..., 2])
    center_y = 0.5 * (anchors[..., 1] + anchors[..., 3])
    widths = anchors[..., 2] - anchors[..., 0]
    heights = anchors[..., 3] - anchors[..., 1]
    return torch.stack(((center_x - boxes[..., 0]) / widths, (center_y - boxes[..., 1]) / heights,
                        (boxes[..., 2] - center_x) / widths, (boxes[..., 3] - center_y) / heights), dim=-1)


def decode_ltrb(distances: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The inverse of encode_ltrb: boxes (x1, y1, x2, y2)."""
    anchors = anchors.to(distances.dtype)
    center_x = 0.5 * (anchors[..., 0] + anchors[..., 2])
    center_y = 0.5 * (anchors[..., 1] + anchors[..., 3])
    widths = anchors[..., 2] - anchors[..., 0]
    heights = anchors[..., 3] - anchors[..., 1]
    return torch.stack((center_x - distances[..., 0] * widths, center_y - distances[..., 1] * heights,
                        center_x + distances[..., 2] * widths, center_y + distances[..., 3] * heights), dim=-1)


class FCOS(DenseDetector):
    def __init__(self, *args, center_sampling_radius: float = 1.5, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.anchor_generator.num_anchors_per_location != 1:
            raise ValueError("FCOS predicts one point per location: model.points needs one size per level "
                             f"and aspect_ratios [1.0], got {self.anchor_generator.num_anchors_per_location} anchors "
                             "per location.")
        self.center_sampling_radius = center_sampling_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def level_scores(self, outputs: dict, level: int, image: int) -> torch.Tensor:
        classes = torch.sigmoid(outputs["cls_logits"][level][image].float())
        centerness = torch.sigmoid(outputs["centerness"][level][image].float())
        return torch.sqrt(classes * centerness)

    def decode(self, box_outputs: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        return decode_ltrb(box_outputs, anchors)

    def match(self, anchors: torch.Tensor, level_counts: Sequence[int], gt_boxes: torch.Tensor) -> torch.Tensor:
        """Index of each point's box, -1 for background (the rules of the module docstring)."""
        if gt_boxes.numel() == 0:
            return torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
        gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        strides = anchors[:, 2] - anchors[:, 0]
        near_center = (centers[:, None, :] - gt_centers[None, :, :]).abs().max(dim=2).values \
            < self.center_sampling_radius * strides[:, None]
        x, y = centers[:, 0:1], centers[:, 1:2]
        edges = torch.stack([x - gt_boxes[None, :, 0], y - gt_boxes[None, :, 1],
                             gt_boxes[None, :, 2] - x, gt_boxes[None, :, 3] - y], dim=2)
        inside = edges.min(dim=2).values > 0
        lower = strides * 4
        lower[: level_counts[0]] = 0
        upper = strides * 8
        upper[-level_counts[-1]:] = float("inf")
        reach = edges.max(dim=2).values
        in_range = (reach > lower[:, None]) & (reach < upper[:, None])
        candidates = near_center & inside & in_range
        areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        # The smallest box wins: its preference (1e8 - area) is the largest among the candidates.
        preference = candidates.to(torch.float32) * (1e8 - areas[None, :])
        best, matches = preference.max(dim=1)
        matches[best < 1e-5] = -1
        return matches

    def losses(self, outputs: dict, anchors: list[torch.Tensor], targets: Sequence[dict]) -> dict:
        level_counts = [a.shape[0] for a in anchors]
        anchors = torch.cat(anchors)
        logits = torch.cat(outputs["cls_logits"], 1).float()
        distances = torch.cat(outputs["bbox_regression"], 1).float()
        centerness = torch.cat(outputs["centerness"], 1).float()[..., 0]
        class_targets = torch.zeros_like(logits)
        matched_boxes, foreground = [], []
        for image, target in enumerate(targets):
            matches = self.match(anchors, level_counts, target["boxes"])
            positive = matches >= 0
            class_targets[image, positive, target["labels"][matches[positive]] - 1] = 1.0
            boxes = target["boxes"][matches.clamp(min=0)] if target["boxes"].numel() else anchors.new_zeros(
                (anchors.shape[0], 4))
            matched_boxes.append(boxes)
            foreground.append(positive)
        matched_boxes, foreground = torch.stack(matched_boxes), torch.stack(foreground)
        normalizer = max(1, int(foreground.sum()))
        all_anchors = anchors[None].expand_as(matched_boxes)
        predicted = decode_ltrb(distances, all_anchors)
        box_loss = generalized_box_iou_loss(predicted[foreground], matched_boxes[foreground], reduction="sum", eps=1e-7)
        ltrb = encode_ltrb(matched_boxes[foreground], all_anchors[foreground])
        left_right, top_bottom = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
        centerness_target = torch.sqrt((left_right.min(dim=-1).values / left_right.max(dim=-1).values)
                                       * (top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values))
        centerness_loss = F.binary_cross_entropy_with_logits(centerness[foreground], centerness_target,
                                                             reduction="sum")
        return {"loss_classifier": focal_loss_sum(logits, class_targets, self.focal_alpha, self.focal_gamma) / normalizer,
                "loss_box_reg": box_loss / normalizer,
                "loss_centerness": centerness_loss / normalizer}


def fcos_fpn(backbone, num_classes: int, channels_last: bool, fold_norms: bool, input, fpn, in_features,
             points, head, head_loss, postprocess,
             rpn=None, roi_heads=None, anchor_generator=None) -> FCOS:
    """model=fcos_fpn: the ResNet of `backbone`, its `in_features` into the FPN of `fpn` (P3..P7),
    one point per location (`points`: squares of each level's stride, made by an AnchorGenerator, and
    named apart from an anchor-based model's `anchor_generator` so that what sets anchors for a
    dataset (the schedule=auto recipe) leaves FCOS's points alone), the dense head with centerness of `head`, the
    target rule and losses of `head_loss`, the test-time keys of `postprocess`.

    `rpn`, `roi_heads` and `anchor_generator`: the R-CNN nodes a CPU schedule
    (conf/schedule/shapes.yaml, bccd.yaml) sets for every model= option, and so adds to this one's
    config; FCOS has none of them, so they are not used (its own test-time keys are `postprocess`,
    its points `points`, fixed at the strides)."""
    from detector.modeling.build import set_norm_folding
    from detector.modeling.dense_builders import dense_backbone, dense_head, postprocess_settings

    features, anchors = dense_backbone(backbone, fpn, in_features, points, anchors_key="model.points")
    model = FCOS(
        features, dense_head(head, features.out_channels, anchors.num_anchors_per_location, num_classes), anchors,
        instantiate(input), num_classes, **postprocess_settings(postprocess), channels_last=channels_last,
        center_sampling_radius=head_loss["center_sampling_radius"], focal_alpha=head_loss["focal_alpha"],
        focal_gamma=head_loss["focal_gamma"])
    set_norm_folding(model, fold_norms)
    return model
