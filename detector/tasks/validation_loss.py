"""The training losses on held-out images, computed periodically during training.

Held-out set: the dataset's test split (the first `test.val_loss_max_images` images that
have boxes and no annotation problems), with training-style targets but no random
augmentation: each image is resized as the model's eval resize would
(model.input.min_size_test / max_size_test), never flipped or jittered, so the same images
give the same numbers at every evaluation.

Losses come from the model in training mode (only then does it compute them) under
torch.no_grad, with two guards so that validation changes nothing about the training:
  * BatchNorm layers run in eval mode: they normalise with their running statistics, as
    at test time, and do not update them (in train mode every validation batch would be
    folded into the statistics the checkpoint keeps); SyncBatchNorm then needs no collective.
  * The proposal and RoI samplers draw random numbers: they draw them from a fixed seed,
    and every generator's state is restored afterwards, so the training stream (and a
    resume's bit-for-bit equality) is the same with or without validation, and the
    validation loss of the same weights is the same number each time.
The weights validated are the training weights (not the EMA), so the curve compares
with the training loss.

Several processes: each rank computes a shard (every world_size-th image); image-weighted
sums and counts are all-reduced, so every rank gets the mean over the whole held-out set.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from torch import nn

from detector.engine.precision import Precision
from detector.tasks.detection import needs_masks, targets_to
from detector.utils.rng_state import capture_rng_state, restore_rng_state
from detector.engine.trainer import HookBase
from detector.utils.distributed import get_world_size, is_distributed

# Seed of the random numbers the samplers draw during validation (fixed: same weights,
# same validation loss).
VALIDATION_SEED = 20_260_000


def build_validation_set(cfg, rank: int = 0, world_size: int = 1):
    """This rank's share of the held-out images, as a train-mode DetectionDataset without
    random augmentation (indexed by (index, position) like the training set)."""
    from detector.data.dataset import DetectionDataset
    from detector.data.formats import build_format
    from detector.data.transforms import ShortestEdgeResize, detection_compose

    dataset_format = build_format(cfg)
    index = dataset_format.index("test")
    records = index.records
    with_masks = needs_masks(cfg)
    if with_masks:  # a mask model's losses need each box's mask; images without usable ones are left out
        from detector.data.build import compact_mask_records

        records, _ = compact_mask_records(records)
    records = [r for r in records if r.problem is None and len(r.boxes)]
    max_images = cfg.test.val_loss_max_images
    if max_images is not None:
        records = records[: int(max_images)]
    if not records:
        raise ValueError(f"train.val_loss_period={cfg.train.val_loss_period}: the {dataset_format.name} test split has "
                         "no images with boxes to compute a validation loss on; set train.val_loss_period=0.")
    size = cfg.model.input
    # Not the training pipeline (cfg.aug.train): only the deterministic resize to the test size.
    transform = detection_compose([ShortestEdgeResize([int(size.min_size_test)], int(size.max_size_test))])
    return DetectionDataset(
        records[rank::world_size], index.class_names, index.label_to_category_id, {}, train=True,
        transform=transform, seed=int(cfg.seed), on_bad_sample="skip", min_box_size=float(cfg.aug.min_box_size),
        max_image_pixels=dataset_format.max_image_pixels, with_masks=with_masks,
    )


def _batches(dataset, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[(i, i)] for i in range(start, min(start + batch_size, len(dataset)))]
        yield [s["image"] for s in samples], [s["target"] for s in samples]


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def compute_validation_loss(model: nn.Module, dataset, device: torch.device, batch_size: int = 2,
                            precision: Precision | None = None) -> dict[str, float]:
    """Mean of each loss over `dataset` (over every rank's shard under DDP), plus
    "total_loss"; the model's modes, buffers and the RNG states are left as they were."""
    modes = {module: module.training for module in model.modules()}
    rng = capture_rng_state()
    sums: dict[str, float] = {}
    count = 0
    try:
        torch.manual_seed(VALIDATION_SEED)
        model.train()
        for norm in _norm_layers(model):
            norm.eval()
        autocast = precision.autocast() if precision is not None else torch.autocast(device.type, enabled=False)
        for images, targets in _batches(dataset, max(1, int(batch_size))):
            images = [image.to(device) for image in images]
            targets = targets_to(targets, device)
            with autocast:
                losses = model(images, targets)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.float()) * len(images)
            count += len(images)
    finally:
        for module, training in modes.items():
            module.train(training)
        restore_rng_state(rng)
    return _mean_over_ranks(sums, count, device)


def _mean_over_ranks(sums: dict[str, float], count: int, device: torch.device) -> dict[str, float]:
    if is_distributed() and get_world_size() > 1:
        # A rank whose shard is empty knows no loss names: share them first.
        names = sorted({name for part in _all_gather_names(sorted(sums)) for name in part})
        tensor = torch.tensor([sums.get(n, 0.0) for n in names] + [float(count)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        sums = dict(zip(names, tensor[:-1].tolist()))
        count = int(tensor[-1])
    if count == 0:
        return {}
    means = {name: value / count for name, value in sums.items()}
    means["total_loss"] = sum(means.values())
    return means


def _all_gather_names(names: list[str]) -> list[list[str]]:
    gathered: list[Any] = [None] * get_world_size()
    torch.distributed.all_gather_object(gathered, names)
    return gathered


class ValidationLossHook(HookBase):
    """Every `period` iterations and at the last one: `compute()` -> {loss name: mean},
    stored as `val/<name>` scalars (TensorBoard tags val/loss_classifier, ..., val/total_loss)
    and logged in one line. All ranks call it (the losses are all-reduced)."""

    def __init__(self, period: int, compute: Callable[[], dict[str, float]], logger: logging.Logger | None = None):
        if period <= 0:
            raise ValueError(f"train.val_loss_period={period}: the hook needs a positive period (0 disables it).")
        self.period = int(period)
        self.compute = compute
        self.logger = logger or logging.getLogger("detector")
        self.history: list[tuple[int, dict[str, float]]] = []

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.period == 0 or done >= self.trainer.max_iter:
            self.validate(done)

    def validate(self, iteration: int) -> dict[str, float]:
        losses = self.compute()
        for name, value in losses.items():
            self.trainer.storage.put_scalar(f"val/{name}", value, smooth=False)
        self.trainer.storage.put_record("val", {f"val/{name}": value for name, value in losses.items()})
        self.history.append((iteration, dict(losses)))
        self.logger.info("Validation loss at iteration %d: %s", iteration,
                         "  ".join(f"{name}: {value:.4f}" for name, value in sorted(losses.items())))
        return losses


def build_validation_loss_hook(cfg, model: nn.Module, device: torch.device, precision: Precision, rank: int,
                               world_size: int, logger: logging.Logger) -> ValidationLossHook | None:
    """The hook for train.val_loss_period > 0 (None when 0). The held-out images are read
    when the first validation runs, not at start-up."""
    period = int(cfg.train.val_loss_period)
    if period <= 0:
        return None
    holder: dict[str, Any] = {}
    batch_size = int(cfg.dataloader.batch_size)

    def compute() -> dict[str, float]:
        if "dataset" not in holder:
            holder["dataset"] = build_validation_set(cfg, rank, world_size)
        return compute_validation_loss(model, holder["dataset"], device, batch_size, precision)

    return ValidationLossHook(period, compute, logger)


__all__: Sequence[str] = ("ValidationLossHook", "build_validation_loss_hook", "build_validation_set",
                          "compute_validation_loss")
