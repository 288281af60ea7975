"""Keypoint R-CNN's keypoint head modules: eight 3x3 convolutions on 14x14 RoIAlign features
(KeypointHead) and the layer turning them into one 56x56 heatmap of logits per keypoint
(KeypointPredictor: a stride-2 transposed convolution to 28x28, then a bilinear 2x upsampling).
Plain modules, built from `model.roi_heads.keypoint_head` by detector.modeling.keypoint_roi_heads.

Module layout follows torchvision's keypointrcnn_resnet50_fpn, so its state dict loads 1:1:
`roi_heads.keypoint_head.{2i}.*` (conv i; the ReLUs sit at the odd indices) and
`roi_heads.keypoint_predictor.kps_score_lowres.*`. Detectron2's KRCNNConvDeconvUpsampleHead is
the same network: conv_fcn{i+1} -> keypoint_head.{2i}, score_lowres -> keypoint_predictor.kps_score_lowres.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeypointHead(nn.Sequential):
    """`num_convs` 3x3 convolutions of `conv_dim` channels, each followed by a ReLU, as one flat
    Sequential (conv, ReLU, conv, ReLU, ...): torchvision's KeypointRCNNHeads layout."""

    def __init__(self, in_channels: int = 256, conv_dim: int = 512, num_convs: int = 8,
                 num_keypoints: int | None = None, keypoint_names=None, skeleton=None):
        # num_keypoints belongs to the predictor, the names and skeleton (1-based pairs) to the
        # pictures of predictions; the config node carries them here so one node
        # (model.roi_heads.keypoint_head) says everything about the branch.
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(channels, conv_dim, 3, padding=1), nn.ReLU(inplace=True)]
            channels = conv_dim
        super().__init__(*layers)
        self.out_channels = channels
        self.num_keypoints = num_keypoints
        self.keypoint_names = None if keypoint_names is None else [str(n) for n in keypoint_names]
        self.skeleton = None if skeleton is None else [tuple(int(i) for i in pair) for pair in skeleton]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # MSRA fill, as both torchvision and Detectron2 initialise this head.
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)


class KeypointPredictor(nn.Module):
    """[R, C, S, S] features -> [R, K, 4S, 4S] heatmap logits: a 4x4 stride-2 transposed
    convolution (padding 1) doubles the side, then bilinear interpolation doubles it again."""

    def __init__(self, in_channels: int, num_keypoints: int, up_scale: int = 2):
        super().__init__()
        self.kps_score_lowres = nn.ConvTranspose2d(in_channels, num_keypoints, 4, stride=2, padding=1)
        nn.init.kaiming_normal_(self.kps_score_lowres.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.kps_score_lowres.bias)
        self.up_scale = up_scale
        self.num_keypoints = num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.kps_score_lowres(x)
        return F.interpolate(x, scale_factor=float(self.up_scale), mode="bilinear", align_corners=False,
                             recompute_scale_factor=False)
