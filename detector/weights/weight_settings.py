"""The settings starting weights were made with, which the config must share.

A few settings change what weights compute without changing any tensor's shape: the channel
order and pixel statistics of the input, and which conv of a bottleneck strides (MSRA's ResNets,
and so Detectron2's, stride in the first 1x1 conv; torchvision's in the 3x3); for a whole
detector also the anchors, RoIAlign's variant, the regression weights and where the background
class sits. Weights loaded under other values load cleanly and silently give wrong outputs. A
converted file records the values in its config (Detectron2's: BGR, 0..255 means, std 1, stride
in the 1x1), so a run adopts them before it builds its model, as torchvision's weights bring
their own transforms.

- `adopt_weight_settings(cfg)`: a run's config takes its starting weights' values (train_net,
  train_cls); each change is logged.
- `check_weight_settings(cfg)`: raises naming the overrides when they differ (load_initial_weights,
  for code that builds the model itself).
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

logger = logging.getLogger(__name__)
_ABSENT = object()   # a key the config does not have (None is a value: anchor_generator.strides)

# Dotted keys that a weights file's config and the run's config must agree on: any file's...
WEIGHT_SETTINGS = ("backbone.stride_in_1x1", "model.input.format", "model.input.pixel_mean", "model.input.pixel_std")
# ...and a whole detector's (model.weights), whose heads also depend on how anchors are laid out,
# how RoIs are pooled, what the regression deltas are scaled by and where the background class sits.
# A backbone file's config holds conf/'s defaults for these, which must not replace the run's.
DETECTOR_SETTINGS = WEIGHT_SETTINGS + tuple(f"model.{key}" for key in (
    "anchor_generator.sizes", "anchor_generator.aspect_ratios", "anchor_generator.round_anchors",
    "anchor_generator.strides", "rpn.bbox_reg_weights", "roi_heads.pooler_sampling_ratio",
    "roi_heads.pooler_aligned", "roi_heads.canonical_box_size", "roi_heads.canonical_level",
    "roi_heads.bbox_reg_weights", "roi_heads.predictor_layout"))


def starting_weights(cfg: DictConfig) -> tuple[str, str] | None:
    """(key, value) of the file whose weights the model ends up with: model.weights loads over
    backbone.weights, so it decides when both are set. None when neither is."""
    for key in ("model.weights", "backbone.weights"):
        value = OmegaConf.select(cfg, key)
        if value:
            return key, str(value)
    return None


def recorded_settings(path: str, keys: tuple[str, ...] = WEIGHT_SETTINGS) -> dict[str, Any]:
    """The `keys` a weights file's config records (published names resolved; a bare state
    dict, such as a torchvision download, records none)."""
    from detector.weights.zoo import resolve_weights

    file = Path(resolve_weights(path))
    stat = file.stat() if file.is_file() else None
    stored = _stored_config(str(file), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1)
    if stored is None:
        return {}
    found = {key: OmegaConf.select(stored, key, default=_ABSENT) for key in keys}
    return {key: _plain(v) for key, v in found.items() if v is not _ABSENT}


@functools.lru_cache(maxsize=4)
def _stored_config(file: str, size: int, mtime_ns: int) -> DictConfig | None:
    """A weights file's config, upgraded; None without one. Read once per file version: a run
    asks twice (adopt, then load_initial_weights' check) before loading the weights themselves."""
    from detector.weights.config_upgrade import upgrade_config
    from detector.weights.safetensors_io import read_checkpoint_with_config

    config = read_checkpoint_with_config(file).get("config")
    if not isinstance(config, dict) or not isinstance(config.get("backbone"), dict):
        return None
    stored = OmegaConf.create(upgrade_config(config) if isinstance(config.get("model"), dict) else config)
    OmegaConf.set_readonly(stored, True)   # shared by every caller of the cache
    return stored


def _plain(value: Any) -> Any:
    return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return len(ours) == len(theirs) and all(_same(a, b) for a, b in zip(ours, theirs))
    if isinstance(ours, float) or isinstance(theirs, float):
        return isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and abs(ours - theirs) <= 1e-6
    return ours == theirs


def differing_settings(cfg: DictConfig) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """(weights key=value, {key: (config's value, weights' value)}) for each key that cfg has and
    the starting weights record otherwise (DETECTOR_SETTINGS for model.weights, WEIGHT_SETTINGS
    for backbone.weights). Empty without starting weights."""
    start = starting_weights(cfg)
    if start is None:
        return "", {}
    key, path = start
    differ = {}
    keys = DETECTOR_SETTINGS if key == "model.weights" else WEIGHT_SETTINGS
    for name, theirs in recorded_settings(path, keys).items():
        ours = OmegaConf.select(cfg, name, default=_ABSENT)
        if ours is _ABSENT:   # e.g. the classifier config has no model.input
            continue
        ours = _plain(ours)
        if not _same(ours, theirs):
            differ[name] = (ours, theirs)
    return f"{key}={path}", differ


def _overrides(differ: dict[str, tuple[Any, Any]]) -> str:
    def text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(text(v) for v in value) + "]"
        if isinstance(value, float):
            return f"{value:.7g}"
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    return " ".join(f"{key}={text(theirs)}" for key, (_, theirs) in differ.items())


def adopt_weight_settings(cfg: DictConfig, log: logging.Logger | None = None) -> dict[str, tuple[Any, Any]]:
    """Set in `cfg`, in place, the settings its starting weights were made with; returns
    {key: (old, new)} for each change and logs them."""
    source, differ = differing_settings(cfg)
    if differ:
        with open_dict(cfg):
            for key, (_, theirs) in differ.items():
                OmegaConf.update(cfg, key, theirs, merge=False)
        (log or logger).info("%s was made with other settings; using them: %s", source, _overrides(differ))
    return differ


def check_weight_settings(cfg: DictConfig) -> None:
    """Raise ValueError when the starting weights were made with other settings than cfg's."""
    source, differ = differing_settings(cfg)
    if differ:
        found = ", ".join(f"{key}={ours}" for key, (ours, _) in differ.items())
        raise ValueError(f"{source} was made with other settings than the config's ({found}); they load cleanly "
                         f"but compute other features. Add the overrides {_overrides(differ)}, or call "
                         "detector.weights.weight_settings.adopt_weight_settings(cfg) before build_model(cfg).")
