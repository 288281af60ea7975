"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection"): anchors of several sizes and
aspect ratios at every location of P3..P7, each classified by K sigmoids trained with the focal
loss and regressed with R-CNN deltas (weights 1, 1, 1, 1).

Targets: an anchor is foreground when its best IoU with a ground-truth box is at least
`fg_iou_thresh` (0.5), background under `bg_iou_thresh` (0.4), ignored in between; every box
also keeps the anchors that overlap it most (low-quality matches), as in both references.
Loss normaliser: `per_image` (torchvision: each image's losses over its own foreground count,
then averaged over images) or `batch_ema` (Detectron2: the batch's losses over a moving average
of the foreground count, momentum 0.9, starting at 100).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import box_iou

from detector.instantiate import instantiate
from detector.modeling.box_coder import BoxCoder
from detector.modeling.dense_detector import DenseDetector
from detector.modeling.dense_losses import DENSE_BOX_LOSSES, box_loss_sum, focal_loss_sum
from detector.modeling.matcher import Matcher

LOSS_NORMALIZERS = ("per_image", "batch_ema")


class RetinaNet(DenseDetector):
    def __init__(self, *args, box_coder: BoxCoder, matcher: Matcher, box_loss: str = "l1",
                 smooth_l1_beta: float = 0.1, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 loss_normalizer: str = "per_image", **kwargs):
        super().__init__(*args, **kwargs)
        if box_loss not in DENSE_BOX_LOSSES:
            raise ValueError(f"model.head_loss.box_loss='{box_loss}'; valid choices: {', '.join(DENSE_BOX_LOSSES)}.")
        if loss_normalizer not in LOSS_NORMALIZERS:
            raise ValueError(f"model.head_loss.normalizer='{loss_normalizer}'; valid choices: "
                             f"{', '.join(LOSS_NORMALIZERS)}.")
        self.box_coder = box_coder
        self.matcher = matcher
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.loss_normalizer = loss_normalizer
        self.foreground_ema = 100.0   # Detectron2's starting value of its moving normaliser

    def level_scores(self, outputs: dict, level: int, image: int) -> torch.Tensor:
        return torch.sigmoid(outputs["cls_logits"][level][image].float())

    def decode(self, box_outputs: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        return self.box_coder.decode(box_outputs, anchors)[:, 0]

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        return self.box_coder.encode(boxes, anchors)

    def losses(self, outputs: dict, anchors: list[torch.Tensor], targets: Sequence[dict]) -> dict:
        anchors = torch.cat(anchors)
        logits = torch.cat(outputs["cls_logits"], 1)
        deltas = torch.cat(outputs["bbox_regression"], 1)
        class_losses, box_losses, counts = [], [], []
        for image, target in enumerate(targets):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            if gt_boxes.numel() == 0:
                matches = torch.full((anchors.shape[0],), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64,
                                     device=anchors.device)
            else:
                matches = self.matcher(box_iou(gt_boxes, anchors))
            foreground = torch.nonzero(matches >= 0, as_tuple=True)[0]
            valid = matches != Matcher.BETWEEN_THRESHOLDS
            class_targets = torch.zeros_like(logits[image], dtype=torch.float32)
            class_targets[foreground, gt_labels[matches[foreground]] - 1] = 1.0
            class_losses.append(focal_loss_sum(logits[image][valid], class_targets[valid], self.focal_alpha,
                                               self.focal_gamma))
            box_losses.append(box_loss_sum(self.box_loss, deltas[image][foreground], anchors[foreground],
                                           gt_boxes[matches[foreground]], self.encode, self.decode,
                                           self.smooth_l1_beta))
            counts.append(foreground.numel())
        if self.loss_normalizer == "per_image":
            scale = [1.0 / (max(1, n) * len(targets)) for n in counts]
            return {"loss_classifier": sum(l * s for l, s in zip(class_losses, scale)),
                    "loss_box_reg": sum(l * s for l, s in zip(box_losses, scale))}
        self.foreground_ema = 0.9 * self.foreground_ema + 0.1 * max(1, sum(counts))
        return {"loss_classifier": sum(class_losses) / self.foreground_ema,
                "loss_box_reg": sum(box_losses) / self.foreground_ema}


def retinanet_fpn(backbone, num_classes: int, channels_last: bool, fold_norms: bool, input, fpn, in_features,
                  anchor_generator, head, head_loss, postprocess,
                  rpn=None, roi_heads=None) -> RetinaNet:
    """model=retinanet_fpn / retinanet_fpn_v2: the ResNet of `backbone`, its `in_features` into the
    FPN of `fpn` (P3..P7), the anchors and dense head of their nodes, the losses of `head_loss`
    and the test-time keys of `postprocess`.

    `rpn` and `roi_heads`: the R-CNN nodes a CPU schedule (conf/schedule/shapes.yaml, bccd.yaml)
    lightens for every model= option, and so adds to this one's config; a one-stage model has
    neither, so they are not used (its own test-time keys are `postprocess`)."""
    from detector.modeling.build import set_norm_folding
    from detector.modeling.dense_builders import dense_backbone, dense_head, postprocess_settings

    features, anchors = dense_backbone(backbone, fpn, in_features, anchor_generator)
    model = RetinaNet(
        features, dense_head(head, features.out_channels, anchors.num_anchors_per_location, num_classes), anchors,
        instantiate(input), num_classes, **postprocess_settings(postprocess), channels_last=channels_last,
        box_coder=BoxCoder(list(head_loss["bbox_reg_weights"])),
        matcher=Matcher(head_loss["fg_iou_thresh"], head_loss["bg_iou_thresh"], allow_low_quality_matches=True),
        box_loss=head_loss["box_loss"], smooth_l1_beta=head_loss["smooth_l1_beta"],
        focal_alpha=head_loss["focal_alpha"], focal_gamma=head_loss["focal_gamma"],
        loss_normalizer=head_loss["normalizer"])
    set_norm_folding(model, fold_norms)
    return model
