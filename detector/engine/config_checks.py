"""Checks on a composed config that catch mistakes before any work starts.

The checks of what the engine reads for every task (conf/runtime/default.yaml: train,
dataloader, solver; the starting weights) live here (check_run_config); each task adds the
checks of its own keys in its Task.check_config (detection: detector/tasks/detection_checks.py,
classification: detector/tasks/classification_checks.py), which the launch calls before
anything is created.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from detector.config import ConfigError  # noqa: F401 (raised here; importable from here as before)


def require_positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value!r} must be a number {need}.")


def check_output_dir(path: str | Path) -> Path:
    """Create `path` and prove it is writable now, not after an hour of training."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"output_dir={str(path)!r} is not writable ({error.strerror or error}). Pick another with output_dir=/some/dir."
        ) from None
    return path


def check_dataset(cfg: DictConfig, eval_only: bool) -> None:
    """The dataset format's own checks (cfg.dataset: its paths set and present) for the splits
    the run reads: the test split alone under eval_only."""
    from detector.data.formats import build_format

    try:
        build_format(cfg).check(["test"] if eval_only else ["train", "test"])
    except ValueError as error:  # DatasetError too
        raise ConfigError(str(error)) from None


def _check_iterations(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "train.max_iter"):
        raise ConfigError("train.max_iter is not set; pick a schedule (schedule=auto|shapes|1x|3x, or for "
                          "tools/train_cls.py cls_schedule=cpu) or set train.max_iter=N.")
    budget = OmegaConf.select(cfg, "train.time_budget")
    if budget is not None:
        from detector.utils.durations import TimeBudgetError, parse_time_budget

        try:
            parse_time_budget(budget, "cpu", {"cpu": 1, "cuda": 1})
        except TimeBudgetError as error:
            raise ConfigError(str(error)) from None
    elif OmegaConf.select(cfg, "train.max_iter") is None and "max_iter" in cfg.train:
        raise ConfigError("train.max_iter is null and train.time_budget is not set; set one: train.max_iter=N or "
                          "train.time_budget=15m (or 2h, or a number of minutes).")


def _check_weights(cfg: DictConfig) -> None:
    if bool(cfg.eval_only) and not cfg.model.weights:
        raise ConfigError("eval_only=true needs model.weights=PATH/TO/checkpoint.pth.")
    from detector.weights.zoo import weights_setting_problem

    for key in ("model.weights", "backbone.weights"):
        value = OmegaConf.select(cfg, key)
        problem = weights_setting_problem(value) if value else None
        if problem:
            raise ConfigError(f"{key}={value}: {problem}")


def check_run_config(cfg: DictConfig) -> None:
    """ConfigError for a value the engine reads, for every task, that cannot work: the
    schedule's length, the loop's periods and batch sizes, the solver, precision, device,
    the best-checkpoint settings and the weights named (model.weights, backbone.weights)."""
    _check_iterations(cfg)
    _check_weights(cfg)
    for key in ("train.max_iter", "train.checkpoint_period", "train.log_period", "train.grad_accum_steps",
                "dataloader.batch_size", "dataloader.test_batch_size", "solver.base_lr", "solver.reference_batch_size"):
        require_positive(cfg, key)
    for key in ("train.eval_period", "train.clip_grad_norm", "dataloader.num_workers", "solver.weight_decay",
                "solver.weight_decay_norm", "solver.warmup_iters"):
        require_positive(cfg, key, allow_zero=True)
    if not 0 < float(cfg.solver.warmup_factor) <= 1:
        raise ConfigError(f"solver.warmup_factor={cfg.solver.warmup_factor} must be in (0, 1].")
    steps = list(cfg.solver.steps)
    longest = cfg.train.max_iter if cfg.train.max_iter is not None else float("inf")  # null: planned from the budget
    if steps != sorted(steps) or any(s <= 0 or s > longest for s in steps):
        raise ConfigError(f"solver.steps={steps} must be increasing iterations within 1..train.max_iter={cfg.train.max_iter}.")
    if bool(cfg.train.ema.enabled):
        if not 0 < float(cfg.train.ema.decay) < 1:
            raise ConfigError(f"train.ema.decay={cfg.train.ema.decay} must be in (0, 1), e.g. 0.9998.")
        if not float(cfg.train.ema.ramp) > 0:
            raise ConfigError(f"train.ema.ramp={cfg.train.ema.ramp} must be > 0 (updates until the decay reaches "
                              "63% of train.ema.decay).")
    if cfg.train.amp not in ("none", "bf16", "fp16"):
        raise ConfigError(f"train.amp={cfg.train.amp!r}: use none, bf16 or fp16.")
    from detector.engine.best_checkpoint import check_best_settings

    try:
        check_best_settings(cfg.train.best_metric, cfg.train.best_mode, cfg.train.early_stop_patience)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device={cfg.train.device!r}: use auto, cpu or cuda.")
    if cfg.solver.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"solver.optimizer={cfg.solver.optimizer!r}: use sgd or adamw.")
    if cfg.solver.lr_scheduler not in ("multistep", "cosine"):
        raise ConfigError(f"solver.lr_scheduler={cfg.solver.lr_scheduler!r}: use multistep or cosine.")


def validate_config(cfg: DictConfig, task=None) -> None:
    """Raise ConfigError for values that would fail later (or silently do nothing): the task's
    (a detector.engine.task.Task) check_config: the engine's checks, then the task's own. (The
    task is not imported here: it imports this module.) Without a task (callers from
    before tasks checked their own keys): the engine's checks and, for a config with a
    `dataset`, the dataset format's."""
    if task is not None:
        task.check_config(cfg)
        return
    check_run_config(cfg)
    if "dataset" in cfg:
        check_dataset(cfg, bool(cfg.eval_only))
