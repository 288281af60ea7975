"""Faster R-CNN's RoI heads, the plain family: pool each proposal, classify it and refine its box
with one box head; the library's box heads; and the family's builder, `standard_roi_heads`.

Each RoI-heads family keeps its module and its builder together (this one, mask_roi_heads,
cascade); the parts they share -- predictor, detection selection, the box branch's config
keys -- live in modules of their own below them.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from detector.modeling.backbone.norm import NORM_CHOICES, conv_norm, make_norm
from detector.modeling.box_branch import BoxBranchKeys
from detector.modeling.box_coder import BoxCoder
from detector.modeling.box_predictor import BoxPredictor
from detector.modeling.detection_selection import select_detections
from detector.modeling.losses import box_regression_loss
from detector.modeling.matcher import Matcher
from detector.modeling.poolers import MultiLevelRoIAlign


class FCBoxHead(nn.Module):
    """Flatten the pooled features, then two fully connected layers with ReLU."""

    def __init__(self, in_channels: int, resolution: int, fc_dim: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * resolution * resolution, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.out_dim = fc_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(start_dim=1)))
        return F.relu(self.fc2(x))


class ConvFCBoxHead(nn.Module):
    """Four 3x3 conv layers, each optionally followed by a norm, with ReLU, then one fully
    connected layer ("4conv1fc"). norm "gn": Detectron2's GN recipes; "bn": torchvision's
    fasterrcnn_resnet50_fpn_v2. `convs` holds conv, [norm,] ReLU in turn (the checkpoint layout)."""

    def __init__(self, in_channels: int, resolution: int, conv_dim: int = 256, fc_dim: int = 1024,
                 num_convs: int = 4, norm: str = "", fold_norms: bool = True):
        super().__init__()
        if norm != "" and norm not in NORM_CHOICES:
            raise ValueError(f"model.roi_heads.conv_norm='{norm}' is not supported; valid choices: '' (none), "
                             f"{', '.join(NORM_CHOICES)}.")
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_convs):
            layers.append(nn.Conv2d(channels, conv_dim, 3, padding=1, bias=norm == ""))
            if norm:
                layers.append(make_norm(norm, conv_dim))
            layers.append(nn.ReLU(inplace=True))
            channels = conv_dim
        self.convs = nn.Sequential(*layers)
        self.fc1 = nn.Linear(conv_dim * resolution * resolution, fc_dim)
        self.out_dim = fc_dim
        # Norms in eval mode folded into the convolutions (see norm.conv_norm); False keeps
        # torchvision's order of operations, for parity tests.
        self.fold_norms = fold_norms
        self.step = 3 if norm else 2
        for module in self.convs:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for start in range(0, len(self.convs), self.step):
            conv = self.convs[start]
            if self.step == 3:
                x = conv_norm(conv, self.convs[start + 1], x, self.fold_norms, relu=True)
            else:
                x = F.relu(conv(x), inplace=True)
        return F.relu(self.fc1(x.flatten(start_dim=1)))


class RoIHeads(nn.Module):
    def __init__(
        self,
        pooler: MultiLevelRoIAlign,
        box_head: nn.Module,
        box_predictor: BoxPredictor,
        box_coder: BoxCoder,
        matcher: Matcher,
        sampler,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        min_box_size: float = 1e-2,
        box_loss: str = "smooth_l1",
        smooth_l1_beta: float = 1.0 / 9,
    ):
        super().__init__()
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.min_box_size = min_box_size
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta

    def forward(self, features: Sequence[torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: Sequence[tuple[int, int]], targets: Sequence[dict] | None = None):
        """Returns (detections: list of dicts per image in resized-image pixels, losses)."""
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode.")
            proposals, labels, regression_targets = self.sample_proposals(proposals, targets)
        box_features = self.box_head(self.pooler(features, proposals))
        logits, deltas = self.box_predictor(box_features)
        logits, deltas = logits.float(), deltas.float()   # losses and decoding in float32 under autocast
        if self.training:
            return [], self.losses(logits, deltas, labels, regression_targets)
        return self.postprocess(logits, deltas, proposals, image_sizes), {}

    @torch.no_grad()
    def sample_proposals(self, proposals: list[torch.Tensor], targets: Sequence[dict]):
        sampled_proposals, sampled_labels, sampled_targets = [], [], []
        for image_proposals, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"].to(image_proposals.dtype), target["labels"]
            # Ground-truth boxes join the proposals so every object has a perfect positive.
            candidates = torch.cat([image_proposals, gt_boxes])
            if gt_boxes.numel() == 0:
                matches = torch.full((len(candidates),), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64,
                                     device=candidates.device)
                gt_boxes = candidates.new_zeros((1, 4))
                gt_labels = gt_labels.new_zeros((1,))
            else:
                matches = self.matcher(box_iou(gt_boxes, candidates))
            labels = gt_labels[matches.clamp(min=0)].to(torch.int64)
            labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
            labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
            positive, negative = self.sampler(labels)
            chosen = torch.cat([positive, negative])
            chosen_boxes = candidates[chosen]
            sampled_proposals.append(chosen_boxes)
            sampled_labels.append(labels[chosen])
            sampled_targets.append(self.box_coder.encode(gt_boxes[matches[chosen].clamp(min=0)], chosen_boxes))
        return sampled_proposals, torch.cat(sampled_labels), torch.cat(sampled_targets)

    def losses(self, logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor,
               regression_targets: torch.Tensor) -> dict[str, torch.Tensor]:
        classification = F.cross_entropy(logits, labels)
        positive = torch.nonzero(labels > 0, as_tuple=True)[0]
        class_deltas = deltas.view(deltas.shape[0], -1, 4)[positive, labels[positive]]
        box_loss = box_regression_loss(class_deltas, regression_targets[positive], self.box_loss,
                                       self.smooth_l1_beta) / max(1, labels.numel())
        return {"loss_classifier": classification, "loss_box_reg": box_loss}

    @torch.no_grad()
    def postprocess(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: list[torch.Tensor],
                    image_sizes) -> list[dict[str, torch.Tensor]]:
        boxes = self.box_coder.decode(deltas, torch.cat(proposals))   # [R, K+1, 4]
        return select_detections(boxes, F.softmax(logits, -1), [len(p) for p in proposals], image_sizes,
                                 self.score_thresh, self.nms_thresh, self.detections_per_img, self.min_box_size)


def standard_roi_heads(in_channels: int, strides: Sequence[int], num_classes: int, box_head: Mapping[str, Any],
                       **box_keys) -> RoIHeads:
    """model.roi_heads of Faster R-CNN: multi-level RoIAlign, the box head its `box_head` node
    names (given in_channels and the pooled resolution), a class/box predictor; box_keys are the
    box branch's keys (detector.modeling.box_branch.BoxBranchKeys)."""
    box = BoxBranchKeys.read(box_keys)
    head = box.box_head(box_head, in_channels)
    return RoIHeads(box.pooler(strides), head, BoxPredictor(head.out_dim, num_classes, box.predictor_layout),
                    BoxCoder(list(box.bbox_reg_weights)), box.proposal_matcher(), box.proposal_sampler(),
                    **box.head_options())
