"""The input size weighed against the time budget: how many training iterations a budget buys
at a given input size, and the largest size that still buys `recipe.budget.min_iters`.

Why an estimate and not a timed step: `load_config([...])` followed by `build_model` must give
the run's model, and config.yaml records the resolved sizes, so the choice must come out the
same every time for a given config, training split, device kind and thread count. A timed step
would differ from one call to the next. The estimate is a cost model: the seconds of a training
step are the pixels it processes (images per step x the mean area of the training sizes) times a
per-device constant, fitted on this project's CPU (conf/schedule/auto.yaml says from what). It
only has to be roughly right: the run's train.time_budget plan (detector/engine/time_budget.py)
still times real steps after warm-up and fixes train.max_iter from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass(frozen=True)
class TrainingBudget:
    """A run's time budget and the device that spends it (everything the estimate depends on
    besides the split's figures and the recipe settings)."""
    seconds: float          # train.time_budget, in seconds
    device: str             # "cpu" or "cuda"
    threads: int            # torch's intra-op threads (CPU)
    images_per_step: int    # dataloader.batch_size x train.grad_accum_steps
    reserved_share: float   # of the budget, left to evaluations and the margin (train.budget)


@dataclass(frozen=True)
class BudgetFit:
    """What the budget buys at the size the objects want and at the size chosen."""
    wanted: int
    chosen: int
    step_s_wanted: float
    step_s_chosen: float
    iters_wanted: int
    iters_chosen: int
    train_s: float          # the seconds the estimate leaves to training steps
    min_iters: int

    @property
    def lowered(self) -> bool:
        return self.chosen < self.wanted

    @property
    def short(self) -> bool:
        """Even the chosen size buys fewer than min_iters (the floor was reached)."""
        return self.iters_chosen < self.min_iters


def seconds_per_pixel(settings: Mapping, budget: TrainingBudget) -> float:
    """One training step's seconds per input pixel on this device: the CPU constant was measured
    at `cpu_reference_threads` threads; other thread counts scale it by a sub-linear speed-up."""
    if budget.device == "cuda":
        return float(settings["cuda_us_per_pixel"]) * 1e-6
    speedup = (max(1, int(budget.threads)) / float(settings["cpu_reference_threads"])) ** float(
        settings["cpu_thread_exponent"])
    return float(settings["cpu_us_per_pixel"]) * 1e-6 / speedup


def training_seconds(settings: Mapping, budget: TrainingBudget) -> float:
    """The part of the budget left to training steps: less the share reserved for evaluations and
    the margin, less a fixed overhead (process start, reading the data, the final evaluation)."""
    return max(0.0, budget.seconds * (1.0 - budget.reserved_share) - float(settings["overhead_s"]))


def fit_size_to_budget(wanted: int, floor: int, multiple: int, pixels_per_image: Callable[[int], float],
                       settings: Mapping, budget: TrainingBudget) -> BudgetFit:
    """The largest test size from `wanted` down to `floor` (in steps of `multiple`) whose training
    steps (`pixels_per_image(size)`: the mean pixels of one training image when testing at `size`)
    leave at least `settings["min_iters"]` iterations in the budget; `floor` when none does."""
    per_pixel = seconds_per_pixel(settings, budget)
    train_s = training_seconds(settings, budget)
    min_iters = int(settings["min_iters"])

    def step_s(size: int) -> float:
        return budget.images_per_step * pixels_per_image(size) * per_pixel

    def iterations(size: int) -> int:
        return int(train_s // max(step_s(size), 1e-9))

    floor = min(int(floor), int(wanted))   # never raise a size the images themselves keep small
    chosen = int(wanted)
    while chosen - multiple >= floor and iterations(chosen) < min_iters:
        chosen -= multiple
    if chosen > floor and iterations(chosen) < min_iters:
        chosen = floor
    return BudgetFit(int(wanted), chosen, step_s(wanted), step_s(chosen), iterations(wanted), iterations(chosen),
                     train_s, min_iters)
