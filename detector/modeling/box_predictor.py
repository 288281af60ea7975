"""The last layers of every box head: class scores and box deltas per RoI.

Its own module because every RoI-heads family uses it (one per cascade stage) and the mask
predictor shares its checkpoint layouts (PREDICTOR_LAYOUTS): torchvision's and Detectron2's
weights differ in where the background class sits, and both load 1:1.
"""
from __future__ import annotations

import torch
from torch import nn

PREDICTOR_LAYOUTS = ("torchvision", "detectron2")


class BoxPredictor(nn.Module):
    """Class scores and box deltas: 4 per class, or one box per proposal (`class_agnostic`, as
    Cascade R-CNN's stages regress).

    layout "torchvision": cls_score has K+1 outputs with background at index 0, and a
    class-specific bbox_pred has 4 per class including background. layout "detectron2":
    background is the last score and a class-specific bbox_pred has 4 per foreground class only.
    Either way `forward` returns background-first logits [R, K+1] and deltas [R, 4*(K+1)]
    ([R, 4] when class-agnostic) so the rest of the code has one convention.
    """

    def __init__(self, in_dim: int, num_classes: int, layout: str = "torchvision", class_agnostic: bool = False):
        super().__init__()
        if layout not in PREDICTOR_LAYOUTS:
            raise ValueError(f"model.roi_heads.predictor_layout='{layout}'; valid choices: {', '.join(PREDICTOR_LAYOUTS)}.")
        self.num_classes = num_classes
        self.layout = layout
        self.class_agnostic = class_agnostic
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        box_outputs = 1 if class_agnostic else num_classes + 1 if layout == "torchvision" else num_classes
        self.bbox_pred = nn.Linear(in_dim, box_outputs * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.cls_score(x)
        deltas = self.bbox_pred(x)
        if self.layout == "detectron2":
            logits = torch.cat([logits[:, -1:], logits[:, :-1]], dim=1)
            if not self.class_agnostic:
                # Background never gets a box; zeros keep the class-indexed layout.
                deltas = torch.cat([deltas.new_zeros((deltas.shape[0], 4)), deltas], dim=1)
        return logits, deltas
