"""From the config tree to a model: the one path, `build_model(cfg)`.

Every component node of conf/backbone/*.yaml and conf/model/*.yaml names what builds it in
`_target_` (a class, or one of the small builders below for components assembled from several
parts) and is built by `detector.config.instantiate` from its own keys, plus what is only known
while building (input channels, strides, the number of classes). Swapping a backbone, a neck or
a head is a config change (docs/extending.md). Nothing here reads files: starting weights are
loaded by detector.weights.loading, which builds through this module, never the reverse.

RoI heads follow one convention, whatever the family (plain: roi_heads.standard_roi_heads,
Mask R-CNN: mask_roi_heads.mask_roi_heads, Cascade: cascade.cascade_roi_heads, or a user's):
the builder sits at the end of its family's module and is called here as
`instantiate(model.roi_heads, in_channels=C, strides=[...], num_classes=K)`. It takes those
three first, then its head nodes (`box_head`, and `mask_head` where it has one) as config
nodes it builds itself, then its family's own keys, then the box branch's keys as
`**box_keys` (read by detector.modeling.box_branch.BoxBranchKeys).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from omegaconf import DictConfig
from torch import nn

from detector.instantiate import instantiate
from detector.modeling.box_coder import BoxCoder
from detector.modeling.faster_rcnn import FasterRCNN
from detector.modeling.matcher import Matcher
from detector.modeling.preprocessing import ImagePreprocessor
from detector.modeling.rpn import RPN, RPNHead
from detector.modeling.sampler import BalancedSampler


def build_model(cfg: DictConfig) -> nn.Module:
    """The model `cfg.model` describes, on the backbone `cfg.backbone` describes: a detector
    (conf/config.yaml) or a classifier (conf/cls.yaml). Weights are initialised as the modules
    do; files named in model.weights / backbone.weights are loaded by
    `detector.weights.loading.load_initial_weights(model, cfg)`."""
    return instantiate(cfg.model, backbone=cfg.backbone)


def set_norm_folding(model: nn.Module, enabled: bool) -> None:
    """Fold fixed norms into the preceding convolutions (faster) or not (torchvision's exact
    order of operations), for every module of `model` that supports it."""
    for module in model.modules():
        if hasattr(module, "set_norm_folding") and module is not model:
            module.set_norm_folding(enabled)
        elif hasattr(module, "fold_norms"):
            module.fold_norms = bool(enabled)


def faster_rcnn_fpn(backbone: Mapping[str, Any], num_classes: int, channels_last: bool, fold_norms: bool,
                    input: Mapping[str, Any], fpn: Mapping[str, Any], anchor_generator: Mapping[str, Any],
                    rpn: Mapping[str, Any], roi_heads: Mapping[str, Any]) -> FasterRCNN:
    """Faster R-CNN: backbone -> FPN neck -> RPN -> RoI heads, each built from its node.

    The backbone is any module returning an ordered dict of named features, fine to coarse,
    with `out_features` (their names), `out_channels` and `strides` (dicts by name)."""
    body = instantiate(backbone)
    names = list(body.out_features)
    neck = instantiate(fpn, in_channels=[body.out_channels[n] for n in names], in_strides=[body.strides[n] for n in names])
    from detector.modeling.backbone.fpn import BackboneWithFPN

    features = BackboneWithFPN(body, neck)
    if len(anchor_generator["sizes"]) != len(features.strides):
        raise ValueError(f"model.anchor_generator.sizes={list(anchor_generator['sizes'])} needs one size per FPN level: "
                         f"{len(features.strides)} levels (strides {features.strides}) come from "
                         f"backbone.out_features={names} plus the pooled top level.")
    levels = neck.level_names[: len(names)]  # the extra top level feeds the RPN only
    model = FasterRCNN(
        backbone=features,
        rpn=instantiate(rpn, in_channels=features.out_channels, anchor_generator=instantiate(anchor_generator)),
        roi_heads=instantiate(roi_heads, in_channels=features.out_channels, strides=features.strides[: len(levels)],
                              num_classes=num_classes),
        preprocessor=instantiate(input),
        num_classes=num_classes,
        pooled_levels=levels,
        channels_last=channels_last,
    )
    set_norm_folding(model, fold_norms)
    return model


def region_proposal_network(in_channels: int, anchor_generator, conv_depth: int, pre_nms_topk_train: int,
                            pre_nms_topk_test: int, post_nms_topk_train: int, post_nms_topk_test: int,
                            nms_thresh: float, score_thresh: float, min_box_size: float, fg_iou_thresh: float,
                            bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float,
                            bbox_reg_weights: Sequence[float], box_loss: str, smooth_l1_beta: float) -> RPN:
    """The RPN of model.rpn: a conv head over every FPN level, anchors, matching and sampling."""
    return RPN(
        head=RPNHead(in_channels, anchor_generator.num_anchors_per_location, conv_depth),
        anchor_generator=anchor_generator,
        box_coder=BoxCoder(list(bbox_reg_weights)),
        matcher=Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True),
        sampler=BalancedSampler(batch_size_per_image, positive_fraction),
        pre_nms_topk={"train": pre_nms_topk_train, "test": pre_nms_topk_test},
        post_nms_topk={"train": post_nms_topk_train, "test": post_nms_topk_test},
        nms_thresh=nms_thresh,
        score_thresh=score_thresh,
        min_box_size=min_box_size,
        box_loss=box_loss,
        smooth_l1_beta=smooth_l1_beta,
    )


def image_preprocessor(min_size_test: int, max_size_test: int, format: str, pixel_mean: Sequence[float],
                       pixel_std: Sequence[float], size_divisibility: int) -> ImagePreprocessor:
    """model.input: normalisation, channel order, the eval-time resize and the padding."""
    return ImagePreprocessor(pixel_mean=list(pixel_mean), pixel_std=list(pixel_std), input_format=format,
                             min_size_test=min_size_test, max_size_test=max_size_test,
                             size_divisibility=size_divisibility)
