"""The validation loss: the task's own training step run on held-out batches, periodically
during training, by the engine for any task (Task.validation_period and
Task.build_validation_loader say when and on what; detection's held-out images are described
in docs/training.md).

Losses come from the model in training mode (only then does a detector compute them) under
torch.no_grad, with two guards so that validation changes nothing about the training:
  * BatchNorm layers run in eval mode: they normalise with their running statistics, as
    at test time, and do not update them (in train mode every validation batch would be
    folded into the statistics the checkpoint keeps); SyncBatchNorm then needs no collective.
  * Random numbers the step draws (a detector's proposal and RoI samplers) come from a fixed
    seed, and every generator's state is restored afterwards, so the training stream (and a
    resume's bit-for-bit equality) is the same with or without validation, and the
    validation loss of the same weights is the same number each time.
The weights validated are the training weights (not the EMA), so the curve compares
with the training loss.

Several processes: each rank computes its share of the batches; image-weighted sums and
counts are all-reduced, so every rank gets the mean over the whole held-out set.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from detector.engine.precision import Precision
from detector.engine.trainer import HookBase, StepFn
from detector.utils.distributed import get_world_size, is_distributed
from detector.utils.rng_state import capture_rng_state, restore_rng_state

# Seed of the random numbers the step draws during validation (fixed: same weights, same
# validation loss).
VALIDATION_SEED = 20_260_000


def images_in(batch: Any) -> int:
    """What a batch weighs in the mean: its number of images (len(batch["images"]), or the
    batch's own length for a tensor), 1 when it says nothing of them."""
    if isinstance(batch, Mapping) and "images" in batch:
        return len(batch["images"])
    if isinstance(batch, torch.Tensor):
        return len(batch)
    return 1


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def validation_losses(model: nn.Module, step: StepFn, batches: Iterable, device: torch.device,
                      precision: Precision | None = None) -> dict[str, float]:
    """The image-weighted mean of each loss `step(model, batch)` returns over `batches` (over
    every rank's batches under DDP), plus "total_loss"; the model's modes, buffers and the RNG
    states are left as they were (see the module docstring)."""
    modes = {module: module.training for module in model.modules()}
    rng = capture_rng_state()
    sums: dict[str, float] = {}
    count = 0
    try:
        # The iterator first: a DataLoader draws its workers' base seed when it starts, which
        # must not shift the numbers the step draws after the fixed seed.
        iterator = iter(batches)
        torch.manual_seed(VALIDATION_SEED)
        model.train()
        for norm in _norm_layers(model):
            norm.eval()
        autocast = precision.autocast() if precision is not None else torch.autocast(device.type, enabled=False)
        for batch in iterator:
            with autocast:
                losses = step(model, batch)
            weight = images_in(batch)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.float()) * weight
            count += weight
    finally:
        for module, training in modes.items():
            module.train(training)
        restore_rng_state(rng)
    return _mean_over_ranks(sums, count, device)


def _mean_over_ranks(sums: dict[str, float], count: int, device: torch.device) -> dict[str, float]:
    if is_distributed() and get_world_size() > 1:
        # A rank whose share is empty knows no loss names: share them first.
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


def build_validation_hook(period: int, model: nn.Module, step: StepFn, build_loader: Callable[[], Iterable],
                          device: torch.device, precision: Precision | None,
                          logger: logging.Logger) -> ValidationLossHook | None:
    """The hook for a positive `period` (None otherwise): `step` on `model` over the batches of
    `build_loader()`, which is called when the first validation runs, not at start-up."""
    if period <= 0:
        return None
    holder: dict[str, Iterable] = {}

    def compute() -> dict[str, float]:
        if "loader" not in holder:
            holder["loader"] = build_loader()
        return validation_losses(model, step, holder["loader"], device, precision)

    return ValidationLossHook(period, compute, logger)
