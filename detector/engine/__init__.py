"""The engine: the training loop and its hooks, the run skeleton any Task plugs into
(run.py, task.py), checkpoints and distributed set-up."""
from detector.weights.checkpointer import FINAL, LAST, Checkpointer
from detector.engine.ema import ModelEMA
from detector.engine.hooks import EvalHook, LRSchedulerHook, PeriodicCheckpointer, PeriodicWriter, SkippedSamplesReport
from detector.engine.precision import Precision, resolve_precision
from detector.engine.task import Task
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
    "Task",
]
