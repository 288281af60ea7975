"""Learning-rate schedules: linear warmup, then multi-step decay or a cosine.

The schedule is a pure function of the iteration (`lr_factor`), so a resumed run picks up
the exact learning rate of an uninterrupted one from the iteration alone.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler


def warmup_factor_at(iteration: int, warmup_iters: int, warmup_factor: float) -> float:
    """Linear ramp from `warmup_factor` at iteration 0 to 1 at `warmup_iters`."""
    if iteration >= warmup_iters or warmup_iters <= 0:
        return 1.0
    alpha = iteration / warmup_iters
    return warmup_factor * (1.0 - alpha) + alpha


def multistep_factor_at(iteration: int, steps: Sequence[int], gamma: float) -> float:
    return gamma ** sum(1 for step in steps if iteration >= step)


def cosine_factor_at(iteration: int, max_iter: int, min_factor: float) -> float:
    progress = min(1.0, max(0, iteration) / max(1, max_iter))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupLR(LRScheduler):
    """lr(iteration) = base_lr * warmup(iteration) * decay(iteration).

    `decay` is "multistep" (x gamma at each of `steps`) or "cosine" (from 1 at iteration
    `decay_start`, 0 unless train.time_budget sets it, to `min_factor` at `max_iter`). Call
    `step()` once per iteration, after the optimizer step.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        decay: str = "multistep",
        steps: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        min_factor: float = 0.0,
        last_epoch: int = -1,
    ):
        if decay not in ("multistep", "cosine"):
            raise ValueError(f"solver.lr_scheduler={decay!r} is not supported; use 'multistep' or 'cosine'.")
        steps = [int(s) for s in steps]
        if sorted(steps) != steps:
            raise ValueError(f"solver.steps must be increasing, got {steps}.")
        if any(s > max_iter for s in steps):
            raise ValueError(f"solver.steps {steps} go beyond train.max_iter={max_iter}; lower the steps or raise max_iter.")
        self.max_iter = int(max_iter)
        self.decay = decay
        self.steps = steps
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.min_factor = float(min_factor)
        # train.time_budget: the cosine starts where the plan fixes max_iter (engine/time_budget.py),
        # so the iterations before it never depend on max_iter.
        self.decay_start = 0
        super().__init__(optimizer, last_epoch)

    def lr_factor(self, iteration: int) -> float:
        if self.decay == "multistep":
            decay = multistep_factor_at(iteration, self.steps, self.gamma)
        else:
            decay = cosine_factor_at(iteration - self.decay_start, self.max_iter - self.decay_start, self.min_factor)
        return warmup_factor_at(iteration, self.warmup_iters, self.warmup_factor) * decay

    # Only the position is state; the shape of the schedule comes from the config, so a run
    # resumed with a longer train.max_iter (or other steps) follows the new schedule.
    _STATE_KEYS = ("last_epoch", "base_lrs", "_last_lr", "_step_count")

    def state_dict(self) -> dict:
        return {key: self.__dict__[key] for key in self._STATE_KEYS if key in self.__dict__}

    def load_state_dict(self, state_dict: dict) -> None:
        # The peak lr (base_lrs) comes from this run's config too: solver.base_lr, the batch
        # and the number of processes may differ from the run that wrote the checkpoint.
        self.__dict__.update({key: state_dict[key] for key in self._STATE_KEYS if key in state_dict and key != "base_lrs"})
        # The optimizer's restored lr is the old schedule's; the next step must already use
        # this config's (e.g. a lower solver.base_lr after a divergence). Same config: same value.
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        factor = self.lr_factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> WarmupLR:
    s = cfg.solver
    return WarmupLR(
        optimizer,
        max_iter=int(cfg.train.max_iter),
        decay=str(s.lr_scheduler),
        steps=list(s.steps),
        gamma=float(s.gamma),
        warmup_iters=int(s.warmup_iters),
        warmup_factor=float(s.warmup_factor),
        min_factor=float(s.min_lr_factor),
    )
