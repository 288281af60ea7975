"""A user's own RoI-heads family, outside the library: the plain family's heads trained with a
label-smoothed classification loss (the true class gets 1 - eps, the rest share eps).

The contract a family meets: a module called as heads(features, proposals, image_sizes,
targets) returning (detections per image, losses), and a builder named in
`model.roi_heads._target_` that takes what the model builder passes (in_channels, strides,
num_classes), the head nodes (box_head), the family's own keys (label_smoothing), then the box
branch's keys (**box_keys), whose parts BoxBranchKeys builds.
"""
import torch
import torch.nn.functional as F

from detector.modeling.box_branch import BoxBranchKeys
from detector.modeling.box_coder import BoxCoder
from detector.modeling.box_predictor import BoxPredictor
from detector.modeling.roi_heads import RoIHeads


class LabelSmoothingRoIHeads(RoIHeads):
    def __init__(self, *parts, label_smoothing: float, **options):
        super().__init__(*parts, **options)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.roi_heads.label_smoothing={label_smoothing}: expected a value in [0, 1).")
        self.label_smoothing = label_smoothing

    def losses(self, logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor,
               regression_targets: torch.Tensor) -> dict[str, torch.Tensor]:
        # The plain family's losses, with its classification term replaced by the smoothed one.
        losses = super().losses(logits, deltas, labels, regression_targets)
        losses["loss_classifier"] = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return losses


def label_smoothing_roi_heads(in_channels: int, strides, num_classes: int, box_head, label_smoothing: float,
                              **box_keys) -> LabelSmoothingRoIHeads:
    box = BoxBranchKeys.read(box_keys)
    head = box.box_head(box_head, in_channels)
    return LabelSmoothingRoIHeads(box.pooler(strides), head, BoxPredictor(head.out_dim, num_classes, box.predictor_layout),
                                  BoxCoder(list(box.bbox_reg_weights)), box.proposal_matcher(), box.proposal_sampler(),
                                  label_smoothing=label_smoothing, **box.head_options())
