"""The box branch every RoI-heads family shares: the keys of `model.roi_heads` that describe it
(conf/model/faster_rcnn_fpn.yaml) and the parts built from them.

Plain, mask and cascade RoI heads all pool proposals with the same multi-level RoIAlign, build
their box head(s) from the `box_head` node, draw the first stage's training proposals with the
same matcher and sampler, and select detections with the same thresholds. Reading those keys
in one place keeps them meaning the same thing in every family, and lets a family's builder
take them as `**box_keys` behind its own keys (the builder convention: detector.modeling.build
and docs/extending.md, "A new RoI-heads family").
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from torch import nn

from detector.instantiate import ComponentArgumentError, instantiate
from detector.modeling.matcher import Matcher
from detector.modeling.poolers import MultiLevelRoIAlign
from detector.modeling.sampler import BalancedSampler


@dataclass(frozen=True)
class BoxBranchKeys:
    """The box branch's keys of model.roi_heads, as the family builders receive them."""

    fc_dim: int                   # read by the box_head node (${..fc_dim}), not here
    conv_dim: int                 # likewise: conv box heads and the mask head
    conv_norm: str                # likewise
    pooler_resolution: int
    pooler_sampling_ratio: int
    pooler_aligned: bool
    canonical_box_size: int
    canonical_level: int
    batch_size_per_image: int
    positive_fraction: float
    fg_iou_thresh: float
    bg_iou_thresh: float
    bbox_reg_weights: Sequence[float]
    box_loss: str
    smooth_l1_beta: float
    predictor_layout: str
    score_thresh: float
    nms_thresh: float
    detections_per_img: int
    min_box_size: float

    @classmethod
    def read(cls, keys: Mapping[str, Any]) -> "BoxBranchKeys":
        """The keys a family builder did not take itself; an unknown or missing one is an error
        naming it (instantiate cannot check keys that arrive through **box_keys)."""
        names = [field.name for field in fields(cls)]
        unknown = sorted(set(keys) - set(names))
        missing = [name for name in names if name not in keys]
        if unknown or missing:
            raise ComponentArgumentError(
                f"model.roi_heads: unknown key(s) {unknown}, missing key(s) {missing}. The RoI heads take the box "
                f"branch's keys {names} (conf/model/faster_rcnn_fpn.yaml) plus their family's own; fix the "
                "spelling, or start the model file from `defaults: [faster_rcnn_fpn, _self_]`.")
        return cls(**keys)

    def pooler(self, strides: Sequence[int], resolution: int | None = None) -> MultiLevelRoIAlign:
        """Multi-level RoIAlign over the levels of `strides`, at the box pooler's resolution or
        at `resolution` (the mask branch's), sampling the same way."""
        return MultiLevelRoIAlign(self.pooler_resolution if resolution is None else resolution, list(strides),
                                  self.pooler_sampling_ratio, self.pooler_aligned, self.canonical_box_size,
                                  self.canonical_level)

    def box_head(self, node: Mapping[str, Any], in_channels: int) -> nn.Module:
        """The module the `box_head` node names, given the pooled features' channels and size."""
        return instantiate(node, in_channels=in_channels, resolution=self.pooler_resolution)

    def proposal_matcher(self) -> Matcher:
        return Matcher(self.fg_iou_thresh, self.bg_iou_thresh, allow_low_quality_matches=False)

    def proposal_sampler(self) -> BalancedSampler:
        return BalancedSampler(self.batch_size_per_image, self.positive_fraction)

    def head_options(self) -> dict[str, Any]:
        """Keyword arguments every RoI-heads class takes alike: detection selection and box loss."""
        names = ("score_thresh", "nms_thresh", "detections_per_img", "min_box_size", "box_loss", "smooth_l1_beta")
        return {name: getattr(self, name) for name in names}
