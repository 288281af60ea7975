"""Checks on a composed config that catch mistakes before any work starts."""
from __future__ import annotations

import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


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


def _check_data(cfg: DictConfig, eval_only: bool) -> None:
    """The training scales, and the dataset format's own checks (its paths set and present)."""
    from detector.data.formats import build_format
    from detector.data.transforms import training_scales

    try:
        training_scales(cfg.aug)
        build_format(cfg).check(["test"] if eval_only else ["train", "test"])
    except ValueError as error:  # DatasetError too
        raise ConfigError(str(error)) from None


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for values that would fail later (or silently do nothing)."""
    eval_only = bool(cfg.eval_only)
    if OmegaConf.is_missing(cfg, "train.max_iter"):
        raise ConfigError("train.max_iter is not set; pick a schedule (schedule=auto|shapes|1x|3x) or set train.max_iter=N.")
    budget = OmegaConf.select(cfg, "train.time_budget")
    if budget is not None:
        from detector.engine.time_budget import TimeBudgetError, parse_time_budget

        try:
            parse_time_budget(budget, "cpu", {"cpu": 1, "cuda": 1})
        except TimeBudgetError as error:
            raise ConfigError(str(error)) from None
    elif OmegaConf.select(cfg, "train.max_iter") is None and "max_iter" in cfg.train:
        raise ConfigError("train.max_iter is null and train.time_budget is not set; set one: train.max_iter=N or "
                          "train.time_budget=15m (or 2h, or a number of minutes).")
    if eval_only and not cfg.model.weights:
        raise ConfigError("eval_only=true needs model.weights=PATH/TO/checkpoint.pth.")
    from detector.weights.zoo import weights_setting_problem

    for key in ("model.weights", "backbone.weights"):
        value = OmegaConf.select(cfg, key)
        problem = weights_setting_problem(value) if value else None
        if problem:
            raise ConfigError(f"{key}={value}: {problem}")
    require_positive(cfg, "train.max_iter")
    require_positive(cfg, "train.checkpoint_period")
    require_positive(cfg, "train.eval_period", allow_zero=True)
    require_positive(cfg, "train.log_period")
    require_positive(cfg, "train.grad_accum_steps")
    require_positive(cfg, "train.clip_grad_norm", allow_zero=True)
    require_positive(cfg, "dataloader.batch_size")
    require_positive(cfg, "dataloader.test_batch_size")
    require_positive(cfg, "dataloader.num_workers", allow_zero=True)
    require_positive(cfg, "solver.base_lr")
    require_positive(cfg, "solver.reference_batch_size")
    require_positive(cfg, "solver.weight_decay", allow_zero=True)
    require_positive(cfg, "solver.weight_decay_norm", allow_zero=True)
    require_positive(cfg, "solver.warmup_iters", allow_zero=True)
    if not 0 < float(cfg.solver.warmup_factor) <= 1:
        raise ConfigError(f"solver.warmup_factor={cfg.solver.warmup_factor} must be in (0, 1].")
    steps = list(cfg.solver.steps)
    longest = cfg.train.max_iter if cfg.train.max_iter is not None else float("inf")  # null: planned from the budget
    if steps != sorted(steps) or any(s <= 0 or s > longest for s in steps):
        raise ConfigError(f"solver.steps={steps} must be increasing iterations within 1..train.max_iter={cfg.train.max_iter}.")
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
    from detector.evaluation.analysis_schedule import analysis_mode

    try:
        analysis_mode(cfg.test.analysis)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if cfg.test.evaluator not in ("faster_coco_eval", "pycocotools"):
        raise ConfigError(f"test.evaluator={cfg.test.evaluator!r}: use faster_coco_eval or pycocotools.")
    min_test, max_test = cfg.model.input.min_size_test, cfg.model.input.max_size_test
    if min_test <= 0 or max_test <= 0 or min_test > max_test:
        raise ConfigError(
            f"model.input.min_size_test={min_test} and max_size_test={max_test}: both must be > 0 and min <= max."
        )
    _check_data(cfg, eval_only)
