"""The settings starting weights were made with, which the config must share.

A few settings change what weights compute without changing any tensor's shape: the channel
order and pixel statistics of the input, and which conv of a bottleneck strides (MSRA's ResNets,
and so Detectron2's, stride in the first 1x1 conv; torchvision's in the 3x3); for a whole
detector also the anchors, RoIAlign's variant, the regression weights, where the background
class sits and how masks are pasted. Weights loaded under other values load cleanly and silently
give wrong outputs. A converted file records the values in its config (Detectron2's: BGR, 0..255
means, std 1, stride in the 1x1), so a run adopts them before it builds its model, as
torchvision's weights bring their own transforms.

- `adopt_settings(cfg, weights, log)`: a run's config takes its starting weights' values
  (train_net, train_cls); each change is logged.
- `refuse_differing_settings(cfg, weights)`: raises naming the overrides when they differ
  (the load, for code that builds the model itself).

`weights` is the run's StartingWeights (detector/weights/starting_weights.py: the files resolved
and read once, with the settings they record). `adopt_weight_settings(cfg)` and
`check_weight_settings(cfg)` do the same for code that has none: they read the files cfg names.
"""
from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from detector.weights.starting_weights import (DETECTOR_SETTINGS, WEIGHT_SETTINGS, StartingWeights,
                                               read_starting_weights)

__all__ = ["DETECTOR_SETTINGS", "WEIGHT_SETTINGS", "adopt_settings", "adopt_weight_settings", "check_weight_settings",
           "differing_settings", "refuse_differing_settings"]

logger = logging.getLogger(__name__)
_ABSENT = object()   # a key the config does not have (None is a value: anchor_generator.strides)


def _plain(value: Any) -> Any:
    return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return len(ours) == len(theirs) and all(_same(a, b) for a, b in zip(ours, theirs))
    if isinstance(ours, float) or isinstance(theirs, float):
        return isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and abs(ours - theirs) <= 1e-6
    return ours == theirs


def differing_settings(cfg: DictConfig, weights: StartingWeights) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """(what the settings come from, {key: (config's value, weights' value)}) for each key that
    cfg has and the starting weights record otherwise (DETECTOR_SETTINGS for model.weights,
    WEIGHT_SETTINGS for backbone.weights). Empty without starting weights."""
    differ = {}
    for name, theirs in weights.settings.items():
        ours = OmegaConf.select(cfg, name, default=_ABSENT)
        if ours is _ABSENT:   # e.g. the classifier config has no model.input
            continue
        ours = _plain(ours)
        if not _same(ours, theirs):
            differ[name] = (ours, theirs)
    return weights.source, differ


def _overrides(differ: dict[str, tuple[Any, Any]]) -> str:
    def text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(text(v) for v in value) + "]"
        if isinstance(value, float):
            return f"{value:.7g}"
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    return " ".join(f"{key}={text(theirs)}" for key, (_, theirs) in differ.items())


def adopt_settings(cfg: DictConfig, weights: StartingWeights,
                   log: logging.Logger | None = None) -> dict[str, tuple[Any, Any]]:
    """Set in `cfg`, in place, the settings its starting weights were made with; returns
    {key: (old, new)} for each change and logs them."""
    source, differ = differing_settings(cfg, weights)
    if differ:
        with open_dict(cfg):
            for key, (_, theirs) in differ.items():
                OmegaConf.update(cfg, key, theirs, merge=False)
        (log or logger).info("%s was made with other settings; using them: %s", source, _overrides(differ))
    return differ


def refuse_differing_settings(cfg: DictConfig, weights: StartingWeights) -> None:
    """Raise ValueError when the starting weights were made with other settings than cfg's."""
    source, differ = differing_settings(cfg, weights)
    if differ:
        found = ", ".join(f"{key}={ours}" for key, (ours, _) in differ.items())
        raise ValueError(f"{source} was made with other settings than the config's ({found}); they load cleanly "
                         f"but compute other features. Add the overrides {_overrides(differ)}, or call "
                         "detector.weights.weight_settings.adopt_weight_settings(cfg) before build_model(cfg).")


def adopt_weight_settings(cfg: DictConfig, log: logging.Logger | None = None,
                          weights: StartingWeights | None = None) -> dict[str, tuple[Any, Any]]:
    """adopt_settings, reading the starting weights cfg names when `weights` is not given."""
    return adopt_settings(cfg, weights if weights is not None else read_starting_weights(cfg), log)


def check_weight_settings(cfg: DictConfig, weights: StartingWeights | None = None) -> None:
    """refuse_differing_settings, reading the starting weights cfg names when `weights` is not given."""
    refuse_differing_settings(cfg, weights if weights is not None else read_starting_weights(cfg))
