"""Cascade R-CNN's RoI heads: a sequence of box stages, each trained at a higher IoU threshold on
the boxes the previous stage refined (Cai & Vasconcelos, 2018), optionally with Mask R-CNN's
mask branch.

Training follows Detectron2's CascadeROIHeads: stage 0 samples the proposals (ground truth
added) like the plain RoI heads; every later stage takes the previous stage's refined,
clipped, non-empty boxes and labels them again at its own IoU threshold (no new sampling).
Each stage's pooled features carry 1/num_stages of the gradient to the backbone. At test time
the class probabilities are averaged over the stages and the boxes are the last stage's.

Submodules are named like Detectron2's, so its model-zoo keys map 1:1:
`roi_heads.box_head.{k}.fc1/fc2`, `roi_heads.box_predictor.{k}.cls_score/bbox_pred` and, with
masks, `roi_heads.mask_head` / `roi_heads.mask_predictor` as in detector.modeling.mask_head.

The family's builder, `cascade_roi_heads`, sits at the end, by the convention of every
RoI-heads family (detector.modeling.build).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from detector.modeling.box_branch import BoxBranchKeys
from detector.modeling.box_coder import BoxCoder
from detector.modeling.box_predictor import BoxPredictor
from detector.modeling.boxes import clip_to_image
from detector.modeling.detection_selection import select_detections
from detector.modeling.losses import box_regression_loss
from detector.modeling.mask_branch import MaskBranch, mask_branch
from detector.modeling.mask_loss import check_mask_targets
from detector.modeling.mask_paste import check_mask_paste
from detector.modeling.matcher import Matcher
from detector.modeling.poolers import MultiLevelRoIAlign

# The usual three stages: IoU thresholds and box-coder weights (the deltas' spread shrinks as the
# boxes get better, so later stages scale them up more).
CASCADE_IOU_THRESHOLDS = (0.5, 0.6, 0.7)
CASCADE_BBOX_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient scaled by `scale` on the way back."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class CascadeRoIHeads(MaskBranch, nn.Module):
    """box_heads, box_predictors, box_coders, matchers: one per stage. The stage-0 matcher with
    `sampler` draws the training proposals; later stages label their boxes with their matcher
    alone. Losses: loss_classifier_stage{k} and loss_box_reg_stage{k}, times stage_loss_weights[k]
    (plus loss_mask with a mask branch). mask_pooler/mask_head/mask_predictor: all or none."""

    def __init__(self, pooler: MultiLevelRoIAlign, box_heads: Sequence[nn.Module], box_predictors: Sequence[nn.Module],
                 box_coders: Sequence[BoxCoder], matchers: Sequence[Matcher], sampler,
                 stage_loss_weights: Sequence[float] | None = None, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100, min_box_size: float = 0.0,
                 box_loss: str = "smooth_l1", smooth_l1_beta: float = 0.0,
                 mask_pooler: MultiLevelRoIAlign | None = None, mask_head: nn.Module | None = None,
                 mask_predictor: nn.Module | None = None, mask_paste: str = "torchvision"):
        super().__init__()
        stages = len(box_heads)
        weights = [1.0] * stages if stage_loss_weights is None else [float(w) for w in stage_loss_weights]
        if stages == 0 or not len(box_predictors) == len(box_coders) == len(matchers) == len(weights) == stages:
            raise ValueError(f"a cascade needs one box head, box predictor, box coder, IoU threshold and loss weight "
                             f"per stage; got {stages} heads, {len(box_predictors)} predictors, {len(box_coders)} "
                             f"coders, {len(matchers)} thresholds and {len(weights)} loss weights "
                             f"(model.roi_heads.stage_loss_weights).")
        mask_parts = (mask_pooler, mask_head, mask_predictor)
        if any(p is None for p in mask_parts) and any(p is not None for p in mask_parts):
            raise ValueError("a cascade mask branch needs mask_pooler, mask_head and mask_predictor together.")
        self.pooler = pooler
        self.box_head = nn.ModuleList(box_heads)
        self.box_predictor = nn.ModuleList(box_predictors)
        self.box_coders = list(box_coders)
        self.matchers = list(matchers)
        self.sampler = sampler
        self.stage_loss_weights = weights
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.min_box_size = min_box_size
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        self.mask_paste = check_mask_paste(mask_paste)

    @property
    def num_stages(self) -> int:
        return len(self.box_head)

    @property
    def has_mask(self) -> bool:
        return self.mask_head is not None

    def forward(self, features: Sequence[torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: Sequence[tuple[int, int]], targets: Sequence[dict] | None = None):
        """Returns (detections: list of dicts per image in resized-image pixels, losses)."""
        if not self.training:
            detections = self.inference(features, proposals, image_sizes)
            if self.has_mask:
                detections = self.add_masks(features, detections)
            return detections, {}
        if targets is None:
            raise ValueError("the RoI heads need targets in training mode.")
        if self.has_mask:
            check_mask_targets(targets)
        return [], self.training_losses(features, proposals, image_sizes, targets)

    def run_stage(self, stage: int, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]):
        """(background-first logits [R, K+1], class-agnostic deltas [R, 4]) in float32."""
        pooled = self.pooler(features, boxes)
        if self.training:
            # Every stage back-propagates into the same features: scaling each by 1/stages keeps
            # the backbone's gradient the size of one head's (Detectron2 does the same).
            pooled = _ScaleGradient.apply(pooled, 1.0 / self.num_stages)
        logits, deltas = self.box_predictor[stage](self.box_head[stage](pooled))
        return logits.float(), deltas.float()

    def refine(self, stage: int, deltas: torch.Tensor, boxes: Sequence[torch.Tensor],
               image_sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """The stage's boxes moved by its deltas, clipped to each image, per image."""
        decoded = self.box_coders[stage].decode(deltas, torch.cat(list(boxes)))[:, 0].detach()
        return [clip_to_image(b, size) for b, size in zip(decoded.split([len(b) for b in boxes]), image_sizes)]

    @torch.no_grad()
    def label_boxes(self, stage: int, boxes: torch.Tensor, target: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(class labels [R]: 0 background, -1 ignored; matched ground-truth index [R], -1 if none)
        of one image's boxes at this stage's IoU threshold."""
        gt_boxes = target["boxes"].to(boxes.dtype)
        if len(gt_boxes) == 0 or len(boxes) == 0:
            none = torch.full((len(boxes),), -1, dtype=torch.int64, device=boxes.device)
            return torch.zeros_like(none), none
        matches = self.matchers[stage](box_iou(gt_boxes, boxes))
        labels = target["labels"][matches.clamp(min=0)].to(torch.int64)
        labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
        labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
        return labels, torch.where(matches >= 0, matches, torch.full_like(matches, -1))

    @torch.no_grad()
    def sample_first_stage(self, proposals: Sequence[torch.Tensor], targets: Sequence[dict]):
        """Stage 0's training boxes per image: the proposals plus the ground truth (so every
        object has a perfect positive), sampled by `sampler`; with their labels and matches."""
        boxes, labels, matched = [], [], []
        for image_proposals, target in zip(proposals, targets):
            candidates = torch.cat([image_proposals, target["boxes"].to(image_proposals.dtype)])
            image_labels, image_matches = self.label_boxes(0, candidates, target)
            positive, negative = self.sampler(image_labels)
            chosen = torch.cat([positive, negative])
            boxes.append(candidates[chosen])
            labels.append(image_labels[chosen])
            matched.append(image_matches[chosen])
        return boxes, labels, matched

    def stage_losses(self, stage: int, logits: torch.Tensor, deltas: torch.Tensor, boxes: Sequence[torch.Tensor],
                     labels: Sequence[torch.Tensor], matched: Sequence[torch.Tensor],
                     targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        all_labels = torch.cat(list(labels))
        classification = F.cross_entropy(logits, all_labels, ignore_index=-1)
        positive_targets = []
        for image_boxes, image_labels, image_matches, target in zip(boxes, labels, matched, targets):
            positive = torch.nonzero(image_labels > 0, as_tuple=True)[0]
            gt_boxes = target["boxes"].to(image_boxes.dtype)[image_matches[positive]]
            positive_targets.append(self.box_coders[stage].encode(gt_boxes, image_boxes[positive]))
        positive = torch.nonzero(all_labels > 0, as_tuple=True)[0]
        box_loss = box_regression_loss(deltas[positive], torch.cat(positive_targets), self.box_loss,
                                       self.smooth_l1_beta) / max(1, all_labels.numel())
        weight = self.stage_loss_weights[stage]
        return {f"loss_classifier_stage{stage}": classification * weight, f"loss_box_reg_stage{stage}": box_loss * weight}

    def training_losses(self, features: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor],
                        image_sizes: Sequence[tuple[int, int]], targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        boxes, labels, matched = self.sample_first_stage(proposals, targets)
        first = (boxes, labels, matched)
        losses: dict[str, torch.Tensor] = {}
        for stage in range(self.num_stages):
            if stage > 0:
                refined = self.refine(stage - 1, deltas, boxes, image_sizes)
                # Boxes squeezed to nothing by the clipping cannot be pooled meaningfully.
                boxes = [b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])] for b in refined]
                labelled = [self.label_boxes(stage, b, t) for b, t in zip(boxes, targets)]
                labels, matched = [x[0] for x in labelled], [x[1] for x in labelled]
            logits, deltas = self.run_stage(stage, features, boxes)
            losses.update(self.stage_losses(stage, logits, deltas, boxes, labels, matched, targets))
        if self.has_mask:
            # The mask branch learns from stage 0's positives (Detectron2's choice).
            losses.update(self.mask_training_loss(features, *first, targets))
        return losses

    @torch.no_grad()
    def inference(self, features: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor],
                  image_sizes: Sequence[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        boxes = list(proposals)
        probabilities = []
        for stage in range(self.num_stages):
            if stage > 0:
                # Empty boxes are kept: every stage scores the same proposals, row for row.
                boxes = self.refine(stage - 1, deltas, boxes, image_sizes)
            logits, deltas = self.run_stage(stage, features, boxes)
            probabilities.append(F.softmax(logits, dim=-1))
        scores = torch.stack(probabilities).mean(dim=0)
        final = self.box_coders[-1].decode(deltas, torch.cat(boxes))            # [R, 1, 4]
        per_class = final.expand(-1, scores.shape[1], -1)
        return select_detections(per_class, scores, [len(b) for b in boxes], image_sizes, self.score_thresh,
                                 self.nms_thresh, self.detections_per_img, self.min_box_size)


def cascade_roi_heads(in_channels: int, strides: Sequence[int], num_classes: int, box_head: Mapping[str, Any],
                      mask_head: Mapping[str, Any] | None, refine_stages: Sequence[Mapping[str, Any]],
                      stage_loss_weights: Sequence[float], mask_pooler_resolution: int, mask_deconv_dim: int,
                      mask_paste: str = "torchvision", **box_keys) -> CascadeRoIHeads:
    """model.roi_heads of Cascade (Mask) R-CNN: one box head per stage (each built from the
    `box_head` node) and one class-agnostic predictor per stage. The first stage is the plain
    head's (the box branch's keys: fg_iou_thresh / bg_iou_thresh, bbox_reg_weights, ...; see
    detector.modeling.box_branch.BoxBranchKeys); each entry of `refine_stages` ({iou_thresh,
    bbox_reg_weights}) adds a stage that relabels the previous stage's refined boxes at its own
    IoU. stage_loss_weights has one weight per stage. A `mask_head` node (not null) adds Mask
    R-CNN's branch, its masks pasted the `mask_paste` way (conf/model sets it; a config without
    it pastes the torchvision way)."""
    box = BoxBranchKeys.read(box_keys)
    iou_thresholds = [box.fg_iou_thresh] + [float(stage["iou_thresh"]) for stage in refine_stages]
    stage_bbox_reg_weights = [list(box.bbox_reg_weights)] + [list(stage["bbox_reg_weights"]) for stage in refine_stages]
    stages = len(iou_thresholds)
    if len(stage_loss_weights) != stages:
        raise ValueError(f"model.roi_heads.stage_loss_weights={list(stage_loss_weights)} needs one weight per cascade "
                         f"stage: {stages} (the first stage plus {len(refine_stages)} refine_stages).")
    heads = [box.box_head(box_head, in_channels) for _ in range(stages)]
    # Built before the predictors, as always: the random initialisation under a seed stays the same.
    mask = {} if mask_head is None else mask_branch(in_channels, strides, num_classes, mask_head,
                                                     mask_pooler_resolution, mask_deconv_dim, box)
    return CascadeRoIHeads(
        pooler=box.pooler(strides),
        box_heads=heads,
        box_predictors=[BoxPredictor(head.out_dim, num_classes, box.predictor_layout, class_agnostic=True)
                        for head in heads],
        box_coders=[BoxCoder(weights) for weights in stage_bbox_reg_weights],
        matchers=[box.proposal_matcher()] + [Matcher(t, t, allow_low_quality_matches=False) for t in iou_thresholds[1:]],
        sampler=box.proposal_sampler(),
        stage_loss_weights=list(stage_loss_weights),
        mask_paste=mask_paste,
        **box.head_options(),
        **mask,
    )
