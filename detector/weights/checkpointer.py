"""Saving and restoring the complete training state.

A checkpoint holds everything an uninterrupted run would still have in memory: model,
optimizer, LR scheduler, GradScaler, EMA, the iteration count, the RNG states and the
resolved config. Files are written atomically and read weights-only
(detector/weights/checkpoint_io.py), and a model holding NaN/inf weights is never written.

`last.pth` is the latest checkpoint and `previous.pth` the one before it (each write of
last.pth first renames the old one). Resuming takes last.pth; when it is missing,
truncated, fails its checksums or holds NaN/inf weights, a warning names it and
previous.pth is used instead, so one damaged file costs at most one checkpoint period.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from detector.utils.distributed import gather_to_main, get_rank, get_world_size
from detector.utils.rng_state import capture_rng_state
from detector.weights.checkpoint_io import TMP_SUFFIX, CheckpointError, load_checkpoint, save_checkpoint


class AveragedWeights(Protocol):
    """What the checkpointer needs of a moving average of the weights (the engine's ModelEMA):
    its state to save and restore, and its module, the final checkpoint's "model". Described
    here, not imported, so that weights/ never imports the engine above it."""

    module: nn.Module

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

LAST = "last.pth"
PREVIOUS = "previous.pth"   # the checkpoint before last.pth: the fallback when last.pth is damaged
FINAL = "model_final.pth"
DAMAGED_SUFFIX = ".damaged"  # a damaged last.pth is moved aside to last.pth.damaged


def non_finite_parameters(model: nn.Module) -> list[str]:
    return [name for name, value in model.state_dict().items() if value.is_floating_point() and not torch.isfinite(value).all()]


class Checkpointer:
    def __init__(
        self,
        model: nn.Module,
        save_dir: str | Path,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: Any = None,
        ema: AveragedWeights | None = None,
        config: dict | None = None,
        save_to_disk: bool = True,
        logger: logging.Logger | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.model = model.module if hasattr(model, "module") else model
        self.save_dir = Path(save_dir)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.ema = ema
        self.config = config
        self.save_to_disk = save_to_disk
        self.logger = logger or logging.getLogger("detector")
        self.extra = dict(extra or {})  # constant entries, e.g. the dataset's category ids

    def state(self, iteration: int, rng_per_rank: list | None = None) -> dict[str, Any]:
        rng_per_rank = rng_per_rank or [capture_rng_state()]
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "iteration": int(iteration),
            "config": self.config,
            "rng": rng_per_rank[0],
            # Each process draws its own random numbers (e.g. RoI sampling on its own
            # images), so an exact resume restores each rank's generators.
            "rng_per_rank": rng_per_rank,
        }
        state.update(self.extra)
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def save(self, name: str, iteration: int, final: bool = False, extra: dict[str, Any] | None = None) -> Path | None:
        """Write `save_dir/name` (rank 0 only). The final checkpoint's "model" is the EMA
        when one is kept, since that is the model evaluated; "model_raw" keeps the other."""
        bad = non_finite_parameters(self.model)
        if bad:
            raise FloatingPointError(
                f"Not saving {name} at iteration {iteration}: parameters {bad[:5]} hold NaN/inf. The previous "
                f"checkpoint in {self.save_dir} is kept. Lower solver.base_lr or set train.clip_grad_norm."
            )
        # Every rank takes part (a collective), only rank 0 writes.
        rng_per_rank = gather_to_main(capture_rng_state())
        if not self.save_to_disk:
            return None
        state = self.state(iteration, rng_per_rank)
        state.update(extra or {})
        if final and self.ema is not None:
            state["model_raw"] = state["model"]
            state["model"] = self.ema.module.state_dict()
        previous = self.save_dir / PREVIOUS if name == LAST else None
        path = save_checkpoint(state, self.save_dir / name, previous=previous)
        self.logger.info("Saved checkpoint %s (iteration %d).", path, iteration)
        return path

    def resume(self, path: str | Path) -> dict[str, Any]:
        """Restore every piece of training state from `path`; returns the checkpoint."""
        checkpoint = load_checkpoint(path)
        check_resumable(checkpoint, path)
        return self.restore(checkpoint, path)

    def restore(self, checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
        """Restore the training state from an already loaded checkpoint."""
        self.model.load_state_dict(checkpoint["model"])
        for key, target in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler), ("ema", self.ema)):
            if target is None:
                continue
            if key not in checkpoint:
                self.logger.warning("Checkpoint %s has no %s state; it starts fresh.", path, key)
                continue
            target.load_state_dict(checkpoint[key])
        self.logger.info("Resumed from %s at iteration %d.", path, checkpoint["iteration"])
        return checkpoint


def check_resumable(checkpoint: dict[str, Any], path: str | Path) -> None:
    missing = [k for k in ("model", "iteration") if k not in checkpoint]
    if missing:
        raise CheckpointError(f"Checkpoint '{path}' lacks {missing}; it cannot be resumed from.")
    bad = [k for k, v in checkpoint["model"].items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"Checkpoint '{path}' holds NaN/inf in {bad[:5]}; this project never writes such "
                              "weights, so the file is damaged.")


def load_latest_good(save_dir: str | Path, logger: logging.Logger | None = None,
                     tidy: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """The newest usable checkpoint of `save_dir`: last.pth, else previous.pth, with a
    warning naming each file that cannot be used. None when neither exists; CheckpointError
    when files exist but none is usable (starting over silently would discard the run).

    tidy (rank 0): delete the temporary files of writes a kill interrupted and move a
    damaged last.pth aside (to last.pth.damaged), so that the next save does not rotate it
    into previous.pth.
    """
    logger = logger or logging.getLogger("detector")
    save_dir = Path(save_dir)
    if tidy and save_dir.is_dir():
        for leftover in sorted(save_dir.glob(f".*{TMP_SUFFIX}")):
            logger.warning("Removing %s: a checkpoint write that was interrupted (the run was stopped while "
                           "writing it); the complete checkpoints are unaffected.", leftover)
            leftover.unlink(missing_ok=True)
    last, previous = save_dir / LAST, save_dir / PREVIOUS
    failures = []
    if not last.is_file() and previous.is_file():
        failures.append(f"{last} is missing")
        logger.warning("Cannot resume from %s: it is missing (a run stopped while replacing it?).", last)
    for path in (last, previous):
        if not path.is_file():
            continue
        try:
            checkpoint = load_checkpoint(path)
            check_resumable(checkpoint, path)
        except CheckpointError as error:
            logger.warning("Cannot resume from %s: %s", path, error)
            failures.append(str(error))
            if tidy and path == last:
                damaged = last.with_name(last.name + DAMAGED_SUFFIX)
                os.replace(last, damaged)
                logger.warning("Moved the damaged %s to %s.", last, damaged)
            continue
        if failures:
            logger.warning("Resuming from the previous good checkpoint %s (iteration %d) instead of %s.",
                           path, checkpoint["iteration"], last)
        return path, checkpoint
    if failures:
        raise CheckpointError(f"No usable checkpoint to resume from in {save_dir}: " + " ".join(failures)
                              + " Move the folder aside to start over, or set train.resume=false and a new output_dir.")
    return None


def rng_state_for_this_rank(checkpoint: dict[str, Any], logger: logging.Logger | None = None) -> dict | None:
    """This process's RNG state from a checkpoint (rank 0's when the world size changed)."""
    per_rank = checkpoint.get("rng_per_rank")
    if per_rank and len(per_rank) == get_world_size():
        return per_rank[get_rank()]
    if per_rank and logger is not None:
        logger.warning(
            "The checkpoint was written by %d processes, this run has %d: random streams differ from an "
            "uninterrupted run (training itself is unaffected).", len(per_rank), get_world_size(),
        )
    return checkpoint.get("rng")
