"""Mask R-CNN's mask head modules: a small FCN on 14x14 RoIAlign features (MaskHead) and the
layer predicting one 28x28 mask per class from it (MaskPredictor). Plain modules, built from
`model.roi_heads.mask_head` and by the mask branch (detector.modeling.mask_branch); the loss,
the branch and the RoI heads around them have modules of their own.

Module layout follows torchvision's maskrcnn_resnet50_fpn(_v2), so its state dict loads 1:1:
`roi_heads.mask_head.{i}.0.*` (conv i, plus `{i}.1.*` for v2's BatchNorm) and
`roi_heads.mask_predictor.{conv5_mask,mask_fcn_logits}.*`. Detectron2's MaskRCNNConvUpsampleHead
maps as mask_fcn{i+1} -> mask_head.{i}.0 (its GN: `.norm` -> `.1`), deconv -> conv5_mask and
predictor -> mask_fcn_logits (layout "detectron2": K outputs, no background).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from detector.modeling.backbone.norm import NORM_CHOICES, conv_norm, make_norm
from detector.modeling.box_predictor import PREDICTOR_LAYOUTS


class MaskHead(nn.Sequential):
    """`num_convs` 3x3 convolutions with ReLU (each optionally followed by a norm: "bn" is
    torchvision's v2, "gn" Detectron2's GN recipes). Block i is Sequential(conv, [norm,] ReLU)."""

    def __init__(self, in_channels: int = 256, conv_dim: int = 256, num_convs: int = 4, dilation: int = 1,
                 norm: str = "", fold_norms: bool = True):
        if norm != "" and norm not in NORM_CHOICES:
            raise ValueError(f"model.roi_heads.mask_conv_norm='{norm}' is not supported; valid choices: '' (none), "
                             f"{', '.join(NORM_CHOICES)}.")
        blocks = []
        channels = in_channels
        for _ in range(num_convs):
            layers: list[nn.Module] = [nn.Conv2d(channels, conv_dim, 3, padding=dilation, dilation=dilation,
                                                 bias=norm == "")]
            if norm:
                layers.append(make_norm(norm, conv_dim))
            layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
            channels = conv_dim
        super().__init__(*blocks)
        self.out_channels = channels
        # Norms in eval mode folded into the convolutions (see norm.conv_norm); False keeps
        # torchvision's order of operations, for parity tests.
        self.fold_norms = fold_norms
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            if len(block) == 3:
                x = conv_norm(block[0], block[1], x, self.fold_norms, relu=True)
            else:
                x = F.relu(block[0](x), inplace=True)
        return x


class MaskPredictor(nn.Sequential):
    """A 2x2 stride-2 transposed convolution with ReLU (14x14 -> 28x28), then 1x1 class logits.

    layout "torchvision": K+1 output channels, background at 0 (never trained or used).
    layout "detectron2": K channels, one per foreground class. Either way `forward` returns
    [R, K+1, 2S, 2S] logits indexed by the class label (1..K), as the box predictor does."""

    def __init__(self, in_channels: int, num_classes: int, deconv_dim: int = 256, layout: str = "torchvision"):
        if layout not in PREDICTOR_LAYOUTS:
            raise ValueError(f"model.roi_heads.predictor_layout='{layout}'; valid choices: {', '.join(PREDICTOR_LAYOUTS)}.")
        outputs = num_classes + 1 if layout == "torchvision" else num_classes
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(in_channels, deconv_dim, 2, stride=2)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(deconv_dim, outputs, 1)),
        ]))
        self.num_classes = num_classes
        self.layout = layout
        nn.init.kaiming_normal_(self.conv5_mask.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv5_mask.bias)
        # Small logits at the start: every mask begins near 0.5 (Detectron2's choice).
        nn.init.normal_(self.mask_fcn_logits.weight, std=0.001)
        nn.init.zeros_(self.mask_fcn_logits.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if self.layout == "detectron2":
            # A background channel of zeros keeps the label-indexed layout.
            logits = torch.cat([logits.new_zeros((logits.shape[0], 1) + logits.shape[2:]), logits], dim=1)
        return logits
