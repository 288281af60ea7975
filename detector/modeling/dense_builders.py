"""The parts RetinaNet and FCOS build alike from their config nodes: the backbone with its P3..P7
pyramid and the anchors (checked against each other), and the dense head."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from detector.instantiate import instantiate
from detector.modeling.backbone.fpn_p6p7 import BackboneWithSelectedFPN


def dense_backbone(backbone: Mapping[str, Any], fpn: Mapping[str, Any], in_features: Sequence[str],
                   anchor_generator: Mapping[str, Any], anchors_key: str = "model.anchor_generator"
                   ) -> tuple[BackboneWithSelectedFPN, nn.Module]:
    """The ResNet of `backbone` whose `in_features` feed the pyramid of `fpn`, and the anchors
    of `anchor_generator` (one entry of sizes per pyramid level; `anchors_key` names its node)."""
    body = instantiate(backbone)
    in_features = list(in_features)
    missing = [name for name in in_features if name not in body.out_features]
    if missing:
        raise ValueError(f"model.in_features={in_features}: the backbone returns only {list(body.out_features)} "
                         f"(backbone.out_features); add {missing} there or change model.in_features.")
    neck = instantiate(fpn, in_channels=[body.out_channels[n] for n in in_features],
                       in_strides=[body.strides[n] for n in in_features])
    features = BackboneWithSelectedFPN(body, neck, in_features)
    if len(anchor_generator["sizes"]) != len(features.strides):
        raise ValueError(f"{anchors_key}.sizes={list(anchor_generator['sizes'])} needs one entry per pyramid "
                         f"level: {len(features.strides)} levels (strides {features.strides}) come from "
                         f"model.in_features={in_features} plus P6 and P7.")
    return features, instantiate(anchor_generator)


def dense_head(head: Mapping[str, Any], in_channels: int, num_anchors: int, num_classes: int) -> nn.Module:
    """The head of `head` for `num_anchors` anchors per location and `num_classes` classes."""
    return instantiate(head, in_channels=in_channels, num_anchors=num_anchors, num_classes=num_classes)


def postprocess_settings(postprocess: Mapping[str, Any]) -> dict[str, Any]:
    """A one-stage model's test-time keys (model.postprocess) as its constructor takes them."""
    return {key: postprocess[key] for key in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates",
                                              "clip_before_nms")}
