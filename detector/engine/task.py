"""The contract between the engine and a task (detection, classification, a user's own).

The engine (detector/engine/run.py) owns what every run does: the run context, seeding, the
classes resolved once, config.yaml, resume, the Trainer and its standard hooks, the
validation loss, checkpoints and checkpoint evaluation. A Task supplies what differs, from
the run's config, and the engine never imports one: the command picks the task
(detector/cli/, through detector/engine/launch.py) and hands it over.

The engine asks, the task answers; a task never reaches into the engine's objects:
  check_config        refuse a config before any work (the generic checks included)
  resolve_classes     the classes, from the data
  build_model         the model (the engine loads the starting weights)
  build_train_loader  this rank's training batches
  build_step          (model, batch) -> loss dict: the training step, and the validation loss's
  build_evaluator     the test-set evaluation
  validation_period / build_validation_loader   the held-out batches the engine validates on
  checkpoint_extras / restore_checkpoint_extras  what the task keeps in every checkpoint
  start_training, extra_hooks                    records before the first step; task hooks

Every method takes the run's config and the run's context (RunContext: device, ranks,
output folder, logger); a task keeps no other state than what it chooses to cache between
calls of one run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from detector.engine.config_checks import check_run_config
from detector.engine.context import RunContext
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

    def check_config(self, cfg: DictConfig) -> None:
        """Raise ConfigError (detector/engine/config_checks.py) for values that cannot work,
        before any work: no folder, no data, no process group yet. This base checks what the
        engine reads for every task (conf/runtime/default.yaml, the weights settings);
        a task adds its own keys' checks after calling it."""
        check_run_config(cfg)

    def resolve_classes(self, cfg: DictConfig, ctx: RunContext | None = None) -> list[str]:
        """Fill model.class_names (and the number of classes) from the data, in place, and
        check them; returns the names. The engine calls it on rank 0 first (it may generate
        the data), then on the other ranks."""
        raise NotImplementedError

    def build_model(self, cfg: DictConfig, ctx: RunContext) -> nn.Module:
        """The model to train: what cfg.model describes (build_model, the one path from config
        to model). The engine then loads the starting weights model.weights / backbone.weights
        name, read once per run (engine/run.py's prepare)."""
        from detector.modeling.build import build_model

        return build_model(cfg)

    def build_train_loader(self, cfg: DictConfig, ctx: RunContext, start_iter: int) -> Iterable:
        """This rank's training batches; `start_iter` counts batches already consumed (resume)."""
        raise NotImplementedError

    def build_step(self, cfg: DictConfig, ctx: RunContext) -> Callable[[nn.Module, Any], Mapping[str, torch.Tensor]]:
        """The Trainer's step function: (model, batch) -> loss dict. The engine's validation
        loss calls the same step on the held-out batches (no gradients, BatchNorm in eval mode)."""
        raise NotImplementedError

    def build_evaluator(self, cfg: DictConfig, model_for_eval: Callable[[], nn.Module], ctx: RunContext,
                        precision) -> Evaluator:
        """The evaluation of the test split; `model_for_eval()` gives the weights to evaluate."""
        raise NotImplementedError

    def validation_period(self, cfg: DictConfig) -> int:
        """Every how many iterations (and at the last one) the engine computes the validation
        loss on build_validation_loader's batches; 0 (the default): never."""
        return 0

    def build_validation_loader(self, cfg: DictConfig, ctx: RunContext) -> Iterable:
        """This rank's share of the held-out batches, in the form build_step's step takes; the
        engine builds it when the first validation runs (not at start-up) and iterates it at
        every validation. A batch counts as len(batch["images"]) images in the mean over
        ranks (1 when it has no "images")."""
        raise NotImplementedError(f"{type(self).__name__}.validation_period is > 0 but the task has no "
                                  "build_validation_loader.")

    def checkpoint_extras(self, cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
        """Entries the task wants in every checkpoint the run writes (last, final, best), next
        to the engine's; asked once, after build_train_loader. Values must be plain data
        (numbers, strings, lists, dicts, tensors) that torch.load(weights_only=True) reads."""
        return {}

    def restore_checkpoint_extras(self, cfg: DictConfig, ctx: RunContext, checkpoint: Mapping[str, Any]) -> None:
        """On resume, before build_train_loader: the resumed checkpoint, whose entries named by
        checkpoint_extras the task may take back. Nothing by default."""

    def start_training(self, cfg: DictConfig, ctx: RunContext, run, train_loader) -> list[Picture]:
        """Once, before the first step (every rank): anything the task records about the run
        in files (model summary, label statistics). Returns pictures for TensorBoard's first
        write."""
        return []

    def extra_hooks(self, cfg: DictConfig, ctx: RunContext, run) -> Sequence[HookBase]:
        """Task hooks; the engine runs them after the evaluation and the validation loss, and
        before the user's hooks, the writers and the checkpoint."""
        return []
