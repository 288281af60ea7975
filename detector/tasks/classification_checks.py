"""The classification task's config checks (ClassificationTask.check_config): the keys of
conf/cls.yaml that only classification reads (data.*, loss.*, the classifier's dropout),
after the engine's checks of the keys every task shares (detector/engine/config_checks.py)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from detector.engine.config_checks import ConfigError, require_positive


def check_classification_config(cfg: DictConfig) -> None:
    """ConfigError naming the key, the value and the fix, for a value of conf/cls.yaml that
    cannot work."""
    if OmegaConf.is_missing(cfg, "data.root"):
        raise ConfigError("data.root is not set: point it at a folder holding train/<class>/ and test/<class>/ "
                          "(tools/crop_instances.py writes one), e.g. data.root=/tmp/bccd_crops.")
    require_positive(cfg, "data.image_size")
    for key in ("data.balance_strength", "loss.label_smoothing", "model.dropout"):
        require_positive(cfg, key, allow_zero=True)
    if str(cfg.data.balance) not in ("none", "sampling", "loss"):
        raise ConfigError(f"data.balance={cfg.data.balance!r}: use none, sampling or loss.")
    if not 0.0 <= float(cfg.data.balance_strength) <= 1.0:
        raise ConfigError(f"data.balance_strength={cfg.data.balance_strength} must be in [0, 1] "
                          "(0: the data's own frequencies, 1: fully balanced).")
