"""Keypoint R-CNN's RoI heads: the plain box branch (detector.modeling.roi_heads) plus a keypoint
branch, and the family's builder, `keypoint_roi_heads`.

The keypoint branch pools each box with its own multi-level RoIAlign (14x14), runs the keypoint
head (eight 3x3 convs) and predictor (to 56x56 heatmaps, one per keypoint). In training it sees
the positive sampled proposals and their matched objects' keypoints (loss_keypoint, the spatial
cross-entropy of detector.modeling.keypoint_decoding); at test time the detections, each given
"keypoints" [N, K, 3] (x, y, 1) and "keypoints_scores" [N, K], as torchvision's KeypointRCNN.

Built by the same convention as the other families (detector.modeling.build): the model
builder's in_channels, strides and num_classes, the head nodes, the family's keys, then the box
branch's keys.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torchvision.ops import box_iou

from detector.instantiate import instantiate
from detector.modeling.box_branch import BoxBranchKeys
from detector.modeling.keypoint_decoding import check_keypoint_decoding, heatmaps_to_keypoints, keypoint_loss
from detector.modeling.keypoint_head import KeypointPredictor
from detector.modeling.poolers import MultiLevelRoIAlign
from detector.modeling.roi_heads import RoIHeads, standard_roi_heads


def check_keypoint_targets(targets: Sequence[dict]) -> None:
    for index, target in enumerate(targets):
        keypoints = target.get("keypoints")
        if keypoints is None:
            raise ValueError(f"target {index} has no 'keypoints': a keypoint model trains on targets with "
                             "'keypoints' float [G, K, 3] (x, y, v) per box (build the data with_keypoints=True).")
        if keypoints.dim() != 3 or keypoints.shape[0] != len(target["boxes"]) or keypoints.shape[2] != 3:
            raise ValueError(f"target {index}: keypoints of shape {tuple(keypoints.shape)}; expected "
                             f"[{len(target['boxes'])}, K, 3], one set per box.")
        if not keypoints.is_floating_point():
            raise ValueError(f"target {index}: keypoints must be float, got {keypoints.dtype}.")


class KeypointRoIHeads(RoIHeads):
    """RoIHeads plus a keypoint branch (module doc). `keypoint_decoding`: how heatmaps become
    keypoints and scores, "torchvision" or "detectron2" (detector.modeling.keypoint_decoding)."""

    def __init__(self, pooler: MultiLevelRoIAlign, box_head: nn.Module, box_predictor: nn.Module, box_coder,
                 matcher, sampler, keypoint_pooler: MultiLevelRoIAlign, keypoint_head: nn.Module,
                 keypoint_predictor: nn.Module, keypoint_decoding: str = "torchvision", **box_options):
        super().__init__(pooler, box_head, box_predictor, box_coder, matcher, sampler, **box_options)
        self.keypoint_pooler = keypoint_pooler
        self.keypoint_head = keypoint_head
        self.keypoint_predictor = keypoint_predictor
        self.keypoint_decoding = check_keypoint_decoding(keypoint_decoding)

    @classmethod
    def from_box_heads(cls, box: RoIHeads, keypoint_pooler: MultiLevelRoIAlign, keypoint_head: nn.Module,
                       keypoint_predictor: nn.Module, keypoint_decoding: str = "torchvision") -> "KeypointRoIHeads":
        """The box branch of `box` (its modules and settings, shared) plus a keypoint branch."""
        return cls(box.pooler, box.box_head, box.box_predictor, box.box_coder, box.matcher, box.sampler,
                   keypoint_pooler, keypoint_head, keypoint_predictor, keypoint_decoding,
                   score_thresh=box.score_thresh, nms_thresh=box.nms_thresh,
                   detections_per_img=box.detections_per_img, min_box_size=box.min_box_size,
                   box_loss=box.box_loss, smooth_l1_beta=box.smooth_l1_beta)

    def keypoint_logits(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.keypoint_predictor(self.keypoint_head(self.keypoint_pooler(features, boxes))).float()

    def forward(self, features: Sequence[torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: Sequence[tuple[int, int]], targets: Sequence[dict] | None = None):
        if not self.training:
            detections, _ = super().forward(features, proposals, image_sizes)
            return self.add_keypoints(features, detections), {}
        if targets is None:
            raise ValueError("the RoI heads need targets in training mode.")
        check_keypoint_targets(targets)
        proposals, labels, regression_targets = self.sample_proposals(proposals, targets)
        logits, deltas = self.box_predictor(self.box_head(self.pooler(features, proposals)))
        losses = self.losses(logits.float(), deltas.float(), labels, regression_targets)
        positives, positive_gt = [], []
        for image_proposals, image_labels, target in zip(proposals, labels.split([len(p) for p in proposals]),
                                                         targets):
            keep = torch.nonzero(image_labels > 0, as_tuple=True)[0]
            positives.append(image_proposals[keep])
            positive_gt.append(self.matched_ground_truth(image_proposals[keep], target))
        heatmaps = self.keypoint_logits(features, positives)
        losses["loss_keypoint"] = keypoint_loss(heatmaps, positives, [t["keypoints"] for t in targets], positive_gt)
        return [], losses

    @torch.no_grad()
    def matched_ground_truth(self, positives: torch.Tensor, target: dict) -> torch.Tensor:
        """Index of the ground truth each positive proposal was matched to. The matcher decides
        each proposal from its own IoU column, so matching again gives the sampler's assignment."""
        if positives.numel() == 0:
            return torch.zeros((0,), dtype=torch.int64, device=positives.device)
        return self.matcher(box_iou(target["boxes"].to(positives.dtype), positives))

    def add_keypoints(self, features: Sequence[torch.Tensor], detections: list[dict]) -> list[dict]:
        """Adds "keypoints" [N, K, 3] and "keypoints_scores" [N, K] to each image's detections, in
        the resized image's pixels (the model scales them to the input image with the boxes)."""
        boxes = [d["boxes"] for d in detections]
        heatmaps = self.keypoint_logits(features, boxes)
        keypoints, scores = heatmaps_to_keypoints(heatmaps, torch.cat(boxes), self.keypoint_decoding)
        if len(detections) == 1:   # a trace (detector.export) must not freeze the example's detection count
            per_image = [(keypoints, scores)]
        else:
            counts = [len(b) for b in boxes]
            per_image = list(zip(keypoints.split(counts), scores.split(counts)))
        for d, (image_keypoints, image_scores) in zip(detections, per_image):
            d["keypoints"] = image_keypoints
            d["keypoints_scores"] = image_scores
        return detections


def keypoint_roi_heads(in_channels: int, strides: Sequence[int], num_classes: int, box_head: Mapping[str, Any],
                       keypoint_head: Mapping[str, Any], keypoint_pooler_resolution: int,
                       keypoint_decoding: str = "torchvision", **box_keys) -> KeypointRoIHeads:
    """model.roi_heads of Keypoint R-CNN: the plain family's (standard_roi_heads, with the same
    box_head node and box keys) plus the `keypoint_head` node (its num_keypoints: the dataset's,
    filled in by the training run), keypoint_pooler_resolution (14) and keypoint_decoding."""
    box = standard_roi_heads(in_channels, strides, num_classes, box_head, **box_keys)
    head = instantiate(keypoint_head, in_channels=in_channels)
    if head.num_keypoints is None:
        raise ValueError("model.roi_heads.keypoint_head.num_keypoints is null: set it to the dataset's number of "
                         "keypoints (a training run fills it in from the dataset's categories).")
    pooler = BoxBranchKeys.read(box_keys).pooler(strides, keypoint_pooler_resolution)
    return KeypointRoIHeads.from_box_heads(box, pooler, head, KeypointPredictor(head.out_channels,
                                                                                int(head.num_keypoints)),
                                           keypoint_decoding)
