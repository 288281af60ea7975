"""The engine: the training loop and its hooks, the run skeleton any Task plugs into
(run.py, task.py), the launch every training command goes through (launch.py), checkpoints
and distributed set-up.

Names are imported on first use, so a command that only parses its arguments (--help, a
mistyped key) starts without loading torch: `from detector.engine import Trainer` works as
before."""
from detector.utils.lazy_exports import lazy_getattr

_EXPORTS = {
    "FINAL": "detector.weights.checkpointer",
    "LAST": "detector.weights.checkpointer",
    "Checkpointer": "detector.weights.checkpointer",
    "ModelEMA": "detector.engine.ema",
    "EvalHook": "detector.engine.hooks",
    "LRSchedulerHook": "detector.engine.hooks",
    "PeriodicCheckpointer": "detector.engine.hooks",
    "PeriodicWriter": "detector.engine.hooks",
    "SkippedSamplesReport": "detector.engine.hooks",
    "Precision": "detector.engine.precision",
    "resolve_precision": "detector.engine.precision",
    "HookBase": "detector.engine.trainer",
    "NonFiniteLossError": "detector.engine.trainer",
    "Trainer": "detector.engine.trainer",
    "Task": "detector.engine.task",
    "RunContext": "detector.engine.context",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr("detector.engine", _EXPORTS)
