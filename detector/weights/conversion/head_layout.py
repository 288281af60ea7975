"""Reading a detector's head layout off weights already in this project's names.

Once a converter has renamed a file's tensors, every source's weights use this project's module
names, so what their heads are -- which norm a block carries, how many mask convs there are
and how wide -- is read the same way whatever the source; each converter then checks what its
source allows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch


def norm_kind(state: Mapping[str, torch.Tensor], prefix: str) -> str:
    """The norm whose parameters start with `prefix`: "" (none), "bn" (FrozenBN, BN or SyncBN:
    running statistics) or "gn" (GroupNorm: weight and bias only)."""
    if f"{prefix}weight" not in state:
        return ""
    return "bn" if f"{prefix}running_mean" in state else "gn"


def numbered(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    """The distinct numbers `pattern`'s first group captures among the keys, sorted."""
    compiled = re.compile(pattern)
    return sorted({int(match.group(1)) for key in state if (match := compiled.match(key))})


@dataclass(frozen=True)
class MaskHeadLayout:
    """The mask branch (conf/model/mask_rcnn_fpn*.yaml): conv blocks, deconvolution, logits."""

    num_convs: int
    conv_dim: int
    norm: str          # norm_kind of the conv blocks
    deconv_dim: int
    outputs: int       # mask logits channels

    def fields(self) -> dict:
        """The model.roi_heads fields that describe it."""
        return {"mask_head": {"conv_dim": self.conv_dim, "num_convs": self.num_convs, "norm": self.norm},
                "mask_deconv_dim": self.deconv_dim}


def mask_head_layout(state: Mapping[str, torch.Tensor], source: str) -> MaskHeadLayout:
    """The mask branch of renamed weights; ValueError naming `source` when its conv blocks are
    not numbered 0..n-1."""
    convs = numbered(state, r"^roi_heads\.mask_head\.(\d+)\.0\.weight$")
    if not convs or convs != list(range(len(convs))):
        raise ValueError(f"{source} mask head with conv blocks {convs}: expected blocks 0..n-1 "
                         "(roi_heads.mask_head.<i>.0.weight in this project's names).")
    return MaskHeadLayout(
        num_convs=len(convs),
        conv_dim=int(state["roi_heads.mask_head.0.0.weight"].shape[0]),
        norm=norm_kind(state, "roi_heads.mask_head.0.1."),
        # ConvTranspose2d weights are [in, out, k, k].
        deconv_dim=int(state["roi_heads.mask_predictor.conv5_mask.weight"].shape[1]),
        outputs=int(state["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0]))


def keypoint_fields(state: Mapping[str, torch.Tensor]) -> dict:
    """model.roi_heads fields of a keypoint branch (conf/model/keypoint_rcnn_fpn.yaml) read off
    renamed weights: its convs (roi_heads.keypoint_head.<2i>: conv, ReLU in turn), their width
    and the number of keypoints (the predictor's transposed convolution's outputs)."""
    convs = numbered(state, r"^roi_heads\.keypoint_head\.(\d+)\.weight$")
    if not convs or convs != list(range(0, 2 * len(convs), 2)):
        raise ValueError(f"keypoint head with convs at {convs}: expected roi_heads.keypoint_head.<0, 2, 4, ...>.weight "
                         "(conv, ReLU in turn, as torchvision's KeypointRCNNHeads).")
    from detector.data.coco_keypoints import COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_SKELETON

    # ConvTranspose2d weights are [in, out, k, k].
    count = int(state["roi_heads.keypoint_predictor.kps_score_lowres.weight"].shape[1])
    head = {"conv_dim": int(state["roi_heads.keypoint_head.0.weight"].shape[0]), "num_convs": len(convs),
            "num_keypoints": count}
    if count == len(COCO_PERSON_KEYPOINT_NAMES):   # the published person models: COCO's names and skeleton
        head.update(keypoint_names=list(COCO_PERSON_KEYPOINT_NAMES), skeleton=[list(p) for p in COCO_PERSON_SKELETON])
    return {"keypoint_head": head}
