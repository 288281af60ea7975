"""The training loop, its hooks, checkpoints and distributed set-up."""
from detector.weights.checkpointer import FINAL, LAST, Checkpointer
from detector.engine.ema import ModelEMA
from detector.engine.hooks import EvalHook, LRSchedulerHook, PeriodicCheckpointer, PeriodicWriter, SkippedSamplesReport
from detector.engine.precision import Precision, resolve_precision
from detector.engine.trainer import HookBase, NonFiniteLossError, Trainer

__all__ = [
    "FINAL",
    "LAST",
    "Checkpointer",
    "ModelEMA",
    "EvalHook",
    "LRSchedulerHook",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "SkippedSamplesReport",
    "Precision",
    "resolve_precision",
    "HookBase",
    "NonFiniteLossError",
    "Trainer",
]
