"""The contract between the engine and a task (detection, classification, a user's own).

The engine (detector/engine/run.py) owns what every run does: the run context, seeding, the
classes resolved once, config.yaml, resume, the Trainer and its standard hooks, checkpoint
evaluation. A Task supplies what differs, from the run's config, and the engine never imports
one: the tools pick the task (detector/tasks/) and hand it over.

Every method takes the run's config; a task keeps no other state than what it chooses to
cache between calls of one run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from detector.engine.trainer import HookBase

Picture = tuple[str, Any]   # (TensorBoard tag, uint8 HWC picture)


class Evaluator(Protocol):
    """Called with the iteration just trained (None: a checkpoint's own evaluation); returns
    flat metric names -> values and pictures, and keeps the full result in `metrics` (what
    training and eval_only return: the task's metrics.json content)."""

    metrics: dict[str, Any] | None

    def __call__(self, iteration: int | None) -> tuple[dict[str, float | None], list[Picture]]: ...

    def finish(self, iteration: int | None) -> None:
        """Called once after training with the iteration of the last evaluation (which an early
        stop makes final only afterwards), e.g. to draw what only the final evaluation draws."""


class TestSetEvaluator:
    """What every task's evaluator shares: the run's settings and a test loader built on first
    use (`build_loader`, per task), so a run that never evaluates never reads the test split."""

    def __init__(self, cfg: DictConfig, model_for_eval: Callable[[], nn.Module], device: torch.device, precision,
                 output_dir, rank: int, world_size: int, logger):
        self.cfg = cfg
        self.model_for_eval = model_for_eval
        self.device = device
        self.precision = precision
        self.output_dir = Path(output_dir)
        self.rank, self.world_size = rank, world_size
        self.logger = logger
        self._loader = None
        self.metrics: dict[str, Any] | None = None

    def build_loader(self):
        raise NotImplementedError

    def finish(self, iteration: int | None) -> None:
        """Nothing more to do after training unless a task's evaluator says otherwise."""

    @property
    def loader(self):
        if self._loader is None:
            self._loader = self.build_loader()
        return self._loader


class Task:
    """Base class of a task. Subclasses implement the methods that raise NotImplementedError
    and may override the others."""

    #: printed in logs
    name = "task"

    def resolve_classes(self, cfg: DictConfig) -> list[str]:
        """Fill model.class_names (and the number of classes) from the data, in place, and
        check them; returns the names. The engine calls it on rank 0 first (it may generate
        the data), then on the other ranks."""
        raise NotImplementedError

    def build_model(self, cfg: DictConfig, logger) -> nn.Module:
        """The model to train: what cfg.model describes (build_model, the one path from config
        to model), with the initial weights model.weights / backbone.weights name."""
        from detector.modeling.build import build_model
        from detector.weights.loading import load_initial_weights

        model = build_model(cfg)
        load_initial_weights(model, cfg, logger)
        return model

    def build_train_loader(self, cfg: DictConfig, ctx, start_iter: int) -> Iterable:
        """This rank's training batches; `start_iter` counts batches already consumed (resume)."""
        raise NotImplementedError

    def build_step(self, cfg: DictConfig, ctx) -> Callable[[nn.Module, Any], Mapping[str, torch.Tensor]]:
        """The Trainer's step function: (model, batch) -> loss dict."""
        raise NotImplementedError

    def build_evaluator(self, cfg: DictConfig, model_for_eval: Callable[[], nn.Module], ctx, precision) -> Evaluator:
        """The evaluation of the test split; `model_for_eval()` gives the weights to evaluate."""
        raise NotImplementedError

    def start_training(self, cfg: DictConfig, ctx, run, train_loader) -> list[Picture]:
        """Once, before the first step (every rank): anything the task records about the run
        (model summary, label statistics, extra checkpoint entries). Returns pictures for
        TensorBoard's first write."""
        return []

    def extra_hooks(self, cfg: DictConfig, ctx, run) -> Sequence[HookBase]:
        """Task hooks (e.g. a validation loss); the engine runs them after the evaluation and
        before the user's hooks, the writers and the checkpoint."""
        return []
