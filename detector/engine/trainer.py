"""An iteration-based training loop extended through hooks.

The loop knows nothing about detection: each iteration it takes `grad_accum_steps`
batches from an iterator, calls `step_fn(model, batch)` -- which returns a dict of loss
tensors -- sums the losses, backpropagates, and steps the optimizer. Learning-rate
schedules, checkpoints, evaluation and logging are hooks. A classifier reuses the same
loop with its own `step_fn`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from detector.engine.ema import ModelEMA
from detector.engine.precision import Precision
from detector.utils.rng_state import restore_rng_state
from detector.utils.distributed import get_world_size, is_distributed
from detector.utils.events import EventStorage

StepFn = Callable[[nn.Module, Any], Mapping[str, torch.Tensor]]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised before the optimizer step, so the weights
    (and every checkpoint) still hold the last good state."""


class HookBase:
    """Override any of these; `self.trainer` is set when the hook is registered."""

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        """Called when the loop ran to max_iter, or a hook stopped it (trainer.stop_reason)."""

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def close(self) -> None:
        """Called at the end whether training succeeded or failed (flush files)."""


def call_model(model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
    """The default step: the model itself takes the batch and returns its losses."""
    return model(batch)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: Iterable,
        max_iter: int,
        step_fn: StepFn = call_model,
        start_iter: int = 0,
        grad_accum_steps: int = 1,
        clip_grad_norm: float = 0.0,
        precision: Precision | None = None,
        scaler: "torch.amp.GradScaler | None" = None,
        ema: ModelEMA | None = None,
        device: torch.device | None = None,
        logger: logging.Logger | None = None,
    ):
        if grad_accum_steps < 1:
            raise ValueError(f"train.grad_accum_steps must be >= 1, got {grad_accum_steps}.")
        self.model = model
        self.optimizer = optimizer
        self.data_loader = data_loader
        self.max_iter = int(max_iter)
        self.step_fn = step_fn
        self.start_iter = int(start_iter)
        self.iter = self.start_iter
        self.grad_accum_steps = int(grad_accum_steps)
        self.clip_grad_norm = float(clip_grad_norm)
        self.precision = precision or Precision("cpu", None, False)
        self.scaler = scaler
        self.ema = ema
        self.device = device or next(model.parameters()).device
        self.logger = logger or logging.getLogger("detector")
        self.hooks: list[HookBase] = []
        self.storage = EventStorage()
        self.skipped_samples: list[str] = []
        # Set by a checkpoint load; applied right before the first iteration, after the
        # data iterator exists, so that nothing in between consumes random numbers.
        self.pending_rng_state: dict | None = None
        # A hook (early stopping) may end the run after the current iteration's hooks.
        self.stop_reason: str | None = None

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    @property
    def stop_requested(self) -> bool:
        return self.stop_reason is not None

    def request_stop(self, reason: str) -> None:
        """End training cleanly once every hook has run for this iteration; the
        checkpointer then writes last.pth and model_final.pth as at max_iter."""
        self.stop_reason = reason

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self.hooks.append(hook)

    def train(self) -> None:
        self.logger.info("Training from iteration %d to %d.", self.start_iter, self.max_iter)
        self.model.train()
        self._data_iter = iter(self.data_loader)
        if self.pending_rng_state is not None:
            restore_rng_state(self.pending_rng_state)
            self.pending_rng_state = None
        try:
            for hook in self.hooks:
                hook.before_train()
            self.iter = self.start_iter
            # max_iter is read each time: a hook may fix it during the run (train.time_budget).
            while self.iter < self.max_iter:
                # Events of this step are filed under the number of iterations done after it.
                self.storage.iteration = self.iter + 1
                for hook in self.hooks:
                    hook.before_step()
                self.run_step()
                for hook in self.hooks:
                    hook.after_step()
                if self.stop_requested:
                    self.logger.info("Training stopped at iteration %d of %d: %s", self.iter + 1, self.max_iter,
                                     self.stop_reason)
                    break
                self.iter += 1
            self.iter = self.iter + 1 if self.stop_requested else self.max_iter
            for hook in self.hooks:
                hook.after_train()
        finally:
            for hook in self.hooks:
                try:
                    hook.close()
                except Exception:  # a failing close must not hide the original error
                    self.logger.exception("Hook %s failed to close.", type(hook).__name__)

    def run_step(self) -> None:
        start = time.perf_counter()
        data_time = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        finite = True
        for micro in range(self.grad_accum_steps):
            fetch = time.perf_counter()
            batch = next(self._data_iter)
            data_time += time.perf_counter() - fetch
            if isinstance(batch, Mapping):
                self.skipped_samples.extend(batch.get("skipped", ()))
            # DDP: only the last micro-batch synchronises gradients.
            sync = (
                self.model.no_sync()
                if micro < self.grad_accum_steps - 1 and hasattr(self.model, "no_sync")
                else contextlib.nullcontext()
            )
            with sync:
                with self.precision.autocast():
                    loss_dict = self.step_fn(self.model, batch)
                if not isinstance(loss_dict, Mapping) or not loss_dict:
                    raise TypeError(f"step_fn must return a non-empty dict of loss tensors, got {type(loss_dict).__name__}.")
                loss = sum(value.float() for value in loss_dict.values())
                for name, value in loss_dict.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / self.grad_accum_steps
                finite = finite and bool(torch.isfinite(loss.detach()))
                scaled = loss / self.grad_accum_steps
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
        local = dict(sums)
        averaged, all_finite = self._reduce_losses(sums, finite)
        if not all_finite:
            terms = ", ".join(f"{k}={v:.6g}" for k, v in sorted(local.items()))
            raise NonFiniteLossError(
                f"Non-finite loss at iteration {self.iter + 1}: {terms}"
                + ("" if not finite else " (this rank's losses are finite; another rank's are not)")
                + ". Training stopped before the optimizer step, so the weights and the last "
                "checkpoint are untouched. Lower solver.base_lr, lengthen solver.warmup_iters, set "
                "train.clip_grad_norm, or check the data for broken boxes."
            )
        grad_norm = self._optimizer_step()
        if self.ema is not None:
            self.ema.update(self.unwrapped_model)
        elapsed = time.perf_counter() - start
        self.storage.put_scalars(**averaged)
        self.storage.put_scalar("total_loss", sum(averaged.values()))
        self.storage.put_scalars(time=elapsed, data_time=data_time)
        if grad_norm is not None:
            self.storage.put_scalar("grad_norm", grad_norm)

    def _reduce_losses(self, sums: dict[str, float], finite: bool) -> tuple[dict[str, float], bool]:
        """Rank-averaged loss values and whether every rank's losses are finite. One small
        collective per iteration, so all ranks stop together on a non-finite loss."""
        if not is_distributed() or get_world_size() == 1:
            return sums, finite and all(math.isfinite(v) for v in sums.values())
        keys = sorted(sums)
        values = [0.0 if not math.isfinite(sums[k]) else sums[k] for k in keys]
        flag = 0.0 if finite and all(math.isfinite(sums[k]) for k in keys) else 1.0
        tensor = torch.tensor(values + [flag], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        world = get_world_size()
        averaged = {k: float(v) / world for k, v in zip(keys, tensor[:-1].tolist())}
        return averaged, float(tensor[-1]) == 0.0

    def _optimizer_step(self) -> float | None:
        grad_norm = None
        if self.clip_grad_norm > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return grad_norm
