"""The detection task's validation loss outside a training run (tests, notebooks): its
held-out images and their losses for a given model. A run does not come here: the engine
computes the validation loss itself (detector/engine/validation.py) with the detection step
on DetectionTask.build_validation_loader's batches, the same data and the same computation.
"""
from __future__ import annotations

import torch
from torch import nn

from detector.engine.precision import Precision
from detector.engine.validation import VALIDATION_SEED, ValidationLossHook, validation_losses
from detector.tasks.detection_step import DetectionStep, needs_keypoints, needs_masks


def build_validation_set(cfg, rank: int = 0, world_size: int = 1):
    """This rank's share of the held-out images (detector.data.build.build_held_out_dataset),
    with masks for a mask model, keypoints for a keypoint model."""
    from detector.data.build import build_held_out_dataset

    return build_held_out_dataset(cfg, rank, world_size, with_masks=needs_masks(cfg),
                                  with_keypoints=needs_keypoints(cfg))


def compute_validation_loss(model: nn.Module, dataset, device: torch.device, batch_size: int = 2,
                            precision: Precision | None = None) -> dict[str, float]:
    """Mean of each loss over `dataset` (over every rank's shard under DDP), plus
    "total_loss"; the model's modes, buffers and the RNG states are left as they were."""
    from detector.data.loader import held_out_batches

    batches = held_out_batches(dataset, max(1, int(batch_size)))
    return validation_losses(model, DetectionStep(device), batches, device, precision)


__all__ = ("VALIDATION_SEED", "ValidationLossHook", "build_validation_set", "compute_validation_loss")
