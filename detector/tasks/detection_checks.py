"""The detection task's config checks (DetectionTask.check_config): the keys of
conf/config.yaml that only detection reads -- evaluation, test-time resize, augmentation
scales, the validation loss -- and the dataset format's own checks (paths set and present),
after the engine's checks of the keys every task shares (detector/engine/config_checks.py)."""
from __future__ import annotations

from omegaconf import DictConfig

from detector.engine.config_checks import ConfigError, check_dataset, require_positive


def check_detection_config(cfg: DictConfig) -> None:
    """ConfigError naming the key, the value and the fix, for a detection value that cannot
    work; nothing is read but the dataset's file and folder names."""
    from detector.data.transforms import training_scales
    from detector.evaluation.analysis_schedule import analysis_mode

    try:
        analysis_mode(cfg.test.analysis)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if cfg.test.evaluator not in ("faster_coco_eval", "pycocotools"):
        raise ConfigError(f"test.evaluator={cfg.test.evaluator!r}: use faster_coco_eval or pycocotools.")
    check_test_precision(cfg)
    require_positive(cfg, "test.max_images")
    require_positive(cfg, "test.val_loss_max_images")
    require_positive(cfg, "train.val_loss_period", allow_zero=True)
    min_test, max_test = cfg.model.input.min_size_test, cfg.model.input.max_size_test
    if min_test <= 0 or max_test <= 0 or min_test > max_test:
        raise ConfigError(
            f"model.input.min_size_test={min_test} and max_size_test={max_test}: both must be > 0 and min <= max."
        )
    try:
        training_scales(cfg.aug)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_dataset(cfg, bool(cfg.eval_only))


def check_test_precision(cfg: DictConfig) -> None:
    """test.precision is an exported file's (detector/deploy/): fp32 or bf16, and bf16 only for
    eval_only on an exported file; a checkpoint computes at train.amp. eval_only on an exported
    file also refuses here what cannot apply to it (test.aug, a device or precision its runtime
    cannot use): detector/deploy/run_settings.py."""
    precision = cfg.test.precision
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"test.precision={precision!r}: use fp32 or bf16.")
    from detector.deploy.file_kind import is_exported_file

    weights = str(cfg.model.weights) if cfg.model.weights else None
    if bool(cfg.eval_only) and weights and is_exported_file(weights):
        from detector.deploy.run_settings import refuse_run_settings

        refuse_run_settings(cfg, weights)
    elif precision != "fp32":
        raise ConfigError(f"test.precision={precision} sets an exported file's precision (eval_only=true "
                          "model.weights=FILE.xml); a checkpoint trains and evaluates at train.amp (none|bf16|fp16).")
