"""The best checkpoint and early stopping, both decided after each evaluation.

`checkpoints/model_best.pth` is written (atomically, by the Checkpointer) whenever
`train.best_metric` improves in the direction of `train.best_mode`; with
`train.early_stop_patience=N > 0` the run stops cleanly after N evaluations in a row
without improvement (the checkpointer then writes last.pth and model_final.pth, and that
evaluation stays the final one). The state -- best value, its iteration, evaluations since
-- travels in every training checkpoint, so a resumed run decides exactly as an
uninterrupted one would, and a run that stopped early stays stopped.
"""
from __future__ import annotations

import logging
from typing import Any

from detector.weights.checkpointer import Checkpointer
from detector.engine.trainer import HookBase

BEST = "model_best.pth"
MODES = ("max", "min")


def check_best_settings(metric: str, mode: str, patience: int) -> None:
    """The config values, checked before any work (ValueError names the key and the fix)."""
    if mode not in MODES:
        raise ValueError(f"train.best_mode={mode!r}: use max (e.g. for bbox/AP) or min (e.g. for a loss).")
    if not isinstance(metric, str) or "/" not in metric:
        raise ValueError(f"train.best_metric={metric!r}: name a key of the evaluation, e.g. bbox/AP, bbox/AP50 or "
                         "bbox_per_category/<class> (the names in TensorBoard and results.csv).")
    if int(patience) < 0:
        raise ValueError(f"train.early_stop_patience={patience}: use 0 (off) or a number of evaluations.")


class BestCheckpointHook(HookBase):
    """Registered right after the EvalHook whose results it reads."""

    def __init__(self, eval_hook, checkpointer: Checkpointer, metric: str = "bbox/AP", mode: str = "max",
                 patience: int = 0, logger: logging.Logger | None = None):
        check_best_settings(metric, mode, patience)
        self.eval_hook = eval_hook
        self.checkpointer = checkpointer
        self.metric = metric
        self.mode = mode
        self.patience = int(patience)
        self.logger = logger or logging.getLogger("detector")
        self.best_value: float | None = None
        self.best_iteration: int | None = None
        self.evals_without_improvement = 0
        self.stopped_at: int | None = None

    # --- state carried by the training checkpoints -------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "mode": self.mode, "best_value": self.best_value,
                "best_iteration": self.best_iteration, "evals_without_improvement": self.evals_without_improvement,
                "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("metric") != self.metric or state.get("mode") != self.mode:
            self.logger.warning(
                "The checkpoint chose its best model by %s (%s); this run uses train.best_metric=%s "
                "train.best_mode=%s: the best value starts over.", state.get("metric"), state.get("mode"),
                self.metric, self.mode)
            return
        self.best_value = state.get("best_value")
        self.best_iteration = state.get("best_iteration")
        self.evals_without_improvement = int(state.get("evals_without_improvement", 0))
        self.stopped_at = state.get("stopped_at")

    # --- the decision after each evaluation --------------------------------------------
    def improves(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.eval_hook.last_iteration != done:
            return
        self.observe(done, self.eval_hook.last_metrics or {})
        if self.stopped_at is not None:
            self.trainer.request_stop(
                f"early stopping: {self.metric} did not improve for {self.evals_without_improvement} evaluations "
                f"(train.early_stop_patience={self.patience}); best {self.best_value:.4f} at iteration "
                f"{self.best_iteration}." if self.best_value is not None else
                f"early stopping: {self.metric} was undefined for {self.evals_without_improvement} evaluations.")

    def observe(self, iteration: int, metrics: dict[str, Any]) -> bool:
        """Take one evaluation into account; True when it is the new best (then saved).
        Every rank calls this with the same (broadcast) metrics: saving is a collective."""
        if self.metric not in metrics:
            raise ValueError(f"train.best_metric={self.metric!r} is not a key of the evaluation; "
                             f"available: {sorted(metrics)[:20]}.")
        value = metrics[self.metric]
        if value is not None and self.improves(float(value)):
            previous = self.best_value
            self.best_value, self.best_iteration = float(value), int(iteration)
            self.evals_without_improvement = 0
            self.checkpointer.save(BEST, iteration, final=True, extra={"best": self.state_dict()})
            self.logger.info("New best %s = %.4f at iteration %d (previous best: %s); saved %s.", self.metric,
                             float(value), iteration, "none" if previous is None else f"{previous:.4f}", BEST)
            return True
        self.evals_without_improvement += 1
        self.logger.info("%s = %s at iteration %d; best %s at iteration %s (%d evaluation(s) without improvement).",
                         self.metric, "undefined" if value is None else f"{float(value):.4f}", iteration,
                         "none" if self.best_value is None else f"{self.best_value:.4f}", self.best_iteration,
                         self.evals_without_improvement)
        if self.patience > 0 and self.evals_without_improvement >= self.patience:
            self.stopped_at = int(iteration)
        return False
