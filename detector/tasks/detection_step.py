"""How a detection batch reaches the model: the training step (also the validation loss's,
which the engine runs with the same step) and the targets a model with or without a mask
branch trains on. A leaf of tasks/: the detection task and its helpers import it, it imports
none of them."""
from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn


def needs_masks(cfg: DictConfig) -> bool:
    """Whether the model has a mask branch (model=mask_rcnn_fpn, cascade_mask_rcnn_fpn), so its
    training targets must carry instance masks. Box models have no mask_head key, or a null one."""
    return _has_roi_branch(cfg, "mask_head")


def needs_keypoints(cfg: DictConfig) -> bool:
    """Whether the model has a keypoint branch (model=keypoint_rcnn_fpn), so its training
    targets must carry keypoints. Other models have no keypoint_head key, or a null one."""
    return _has_roi_branch(cfg, "keypoint_head")


def _has_roi_branch(cfg: DictConfig, branch: str) -> bool:
    """A non-null `branch` node in model.roi_heads; one-stage models (retinanet_fpn, fcos_fpn) may
    have no roi_heads node at all."""
    return "roi_heads" in cfg.model and branch in cfg.model.roi_heads and cfg.model.roi_heads[branch] is not None


def targets_to(targets: list[dict], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The model's training targets on `device`: boxes, labels, and masks and keypoints when the data has them."""
    keys = ("boxes", "labels", "masks", "keypoints")
    return [{key: t[key].to(device, non_blocking=True) for key in keys if key in t} for t in targets]


class DetectionStep:
    """Moves a batch {"images", "targets", ...} to the device and returns the model's loss dict."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        images = [image.to(self.device, non_blocking=True) for image in batch["images"]]
        return model(images, targets_to(batch["targets"], self.device))
