"""Region proposal network: objectness and box deltas for every anchor, then proposals."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from detector.modeling.anchor_generator import AnchorGenerator
from detector.modeling.backbone.folded_conv import conv_with_post_ops
from detector.modeling.box_coder import BoxCoder
from detector.modeling.boxes import batched_nms, box_sizes_at_least, clip_boxes, size_tensor
from detector.modeling.losses import box_regression_loss
from detector.modeling.matcher import Matcher
from detector.modeling.sampler import BalancedSampler


class RPNHead(nn.Module):
    """`conv_depth` 3x3 conv + ReLU layers shared by all levels, then 1x1 convs giving one
    objectness logit and four deltas per anchor."""

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 3, padding=1) for _ in range(conv_depth))
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: objectness [N, H*W*A] and deltas [N, H*W*A, 4], ordered (row, col, anchor)."""
        objectness, deltas = [], []
        for feature in features:
            x = feature
            for conv in self.convs:
                x = conv_with_post_ops(x, conv, relu=True)
            logits = self.objectness(x)
            n, a, h, w = logits.shape
            objectness.append(logits.permute(0, 2, 3, 1).reshape(n, -1))
            deltas.append(self.deltas(x).view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        return objectness, deltas


class RPN(nn.Module):
    def __init__(
        self,
        head: RPNHead,
        anchor_generator: AnchorGenerator,
        box_coder: BoxCoder,
        matcher: Matcher,
        sampler: BalancedSampler,
        pre_nms_topk: dict[str, int],
        post_nms_topk: dict[str, int],
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        min_box_size: float = 1e-3,
        box_loss: str = "smooth_l1",
        smooth_l1_beta: float = 1.0 / 9,
    ):
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.pre_nms_topk = dict(pre_nms_topk)
        self.post_nms_topk = dict(post_nms_topk)
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_box_size = min_box_size
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta

    def _mode(self) -> str:
        return "train" if self.training else "test"

    def forward(self, features: Sequence[torch.Tensor], image_sizes: Sequence[tuple[int, int]],
                padded_size: tuple[int, int], targets: Sequence[dict] | None = None):
        """Returns (proposals: list of [P_i, 4] per image, in the resized image's pixels;
        their objectness probabilities; losses dict (empty in eval)). image_sizes and
        padded_size may also be int tensors [N, 2] and [2] (the traced export does so)."""
        objectness, deltas = self.head(features)
        # Anchors and box arithmetic stay in float32 even under autocast: half precision
        # cannot hold pixel coordinates of large images exactly.
        anchors = self.anchor_generator([f.shape[-2:] for f in features], padded_size,
                                        dtype=torch.float32, device=features[0].device)
        proposals, scores = self.select_proposals(anchors, objectness, deltas, image_sizes)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode.")
            losses = self.losses(torch.cat(anchors), torch.cat(objectness, 1), torch.cat(deltas, 1), targets)
        return proposals, scores, losses

    @torch.no_grad()
    def select_proposals(self, anchors: list[torch.Tensor], objectness: list[torch.Tensor],
                         deltas: list[torch.Tensor], image_sizes):
        """image_sizes: (height, width) per image, as pairs or an int tensor [N, 2]. Sizes and
        counts stay tensor operations (top-k of min(k, anchors), masks, NMS), so a trace of
        this code holds for any image size (detector.export traces it)."""
        num_images = len(image_sizes)
        pre_nms_topk = self.pre_nms_topk[self._mode()]
        # Top-k per level over the whole batch at once; only decode the survivors.
        top_scores, top_boxes, top_levels = [], [], []
        for level, (level_anchors, level_logits, level_deltas) in enumerate(zip(anchors, objectness, deltas)):
            num_anchors = level_logits.shape[1]
            # min() of an int and a traced size would freeze the size into the trace.
            k = torch.clamp(num_anchors, max=pre_nms_topk) if torch.jit.is_tracing() else min(pre_nms_topk, num_anchors)
            logits, index = level_logits.detach().float().topk(k, dim=1)
            picked_deltas = torch.gather(level_deltas.detach().float(), 1, index[..., None].expand(-1, -1, 4))
            picked_anchors = level_anchors[index.reshape(-1)]
            boxes = self.box_coder.decode(picked_deltas.reshape(-1, 4), picked_anchors).view(num_images, -1, 4)
            top_scores.append(logits)
            top_boxes.append(boxes)
            top_levels.append(torch.full_like(index, level))
        scores = torch.sigmoid(torch.cat(top_scores, 1))
        boxes = clip_boxes(torch.cat(top_boxes, 1), size_tensor(image_sizes, scores.device))
        levels = torch.cat(top_levels, 1)
        keep_mask = box_sizes_at_least(boxes, self.min_box_size) & (scores >= self.score_thresh)
        post_nms_topk = self.post_nms_topk[self._mode()]
        proposals, proposal_scores = [], []
        for i in range(num_images):
            keep = torch.nonzero(keep_mask[i], as_tuple=True)[0]
            image_boxes, image_scores = boxes[i, keep], scores[i, keep]
            # NMS per image and independently per level.
            keep = batched_nms(image_boxes, image_scores, levels[i, keep], self.nms_thresh)[:post_nms_topk]
            proposals.append(image_boxes[keep])
            proposal_scores.append(image_scores[keep])
        return proposals, proposal_scores

    def losses(self, anchors: torch.Tensor, objectness: torch.Tensor, deltas: torch.Tensor, targets: Sequence[dict]):
        """anchors [A, 4] (shared by all images), objectness [N, A], deltas [N, A, 4]."""
        labels, matched_boxes = [], []
        for target in targets:
            gt_boxes = target["boxes"]
            if gt_boxes.numel() == 0:
                labels.append(torch.zeros(anchors.shape[0], dtype=torch.float32, device=anchors.device))
                matched_boxes.append(torch.zeros_like(anchors))
                continue
            matches = self.matcher(box_iou(gt_boxes, anchors))
            image_labels = (matches >= 0).to(torch.float32)
            image_labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(image_labels)
            matched_boxes.append(gt_boxes[matches.clamp(min=0)])
        labels_all = torch.stack(labels)
        positives, negatives = [], []
        for i, image_labels in enumerate(labels):
            pos, neg = self.sampler(image_labels)
            offset = i * anchors.shape[0]
            positives.append(pos + offset)
            negatives.append(neg + offset)
        positive = torch.cat(positives)
        sampled = torch.cat([positive, torch.cat(negatives)])
        flat_deltas = deltas.reshape(-1, 4).float()
        flat_anchors = anchors.repeat(len(targets), 1)
        regression_targets = self.box_coder.encode(torch.cat(matched_boxes)[positive], flat_anchors[positive])
        box_loss = box_regression_loss(flat_deltas[positive], regression_targets, self.box_loss,
                                       self.smooth_l1_beta) / max(1, sampled.numel())
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.reshape(-1)[sampled].float(),
                                                             labels_all.reshape(-1)[sampled])
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}
