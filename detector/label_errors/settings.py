"""The tool's own settings: conf/label_errors/default.yaml, refined by `label_errors.<key>=value`.

The tool's command line mixes two kinds of overrides: `label_errors.*` refine this file; every
other one (dataset=..., model=..., train.max_iter=...) goes, unchanged, to each fold's training.
"""
from __future__ import annotations

from typing import Iterable

import yaml
from omegaconf import DictConfig, OmegaConf

from detector.config import CONFIG_DIR

PREFIX = "label_errors."
SETTINGS_FILE = CONFIG_DIR / "label_errors" / "default.yaml"


def split_overrides(overrides: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the tool's label_errors.* overrides, the training's overrides)."""
    own, training = [], []
    for item in overrides:
        (own if str(item).startswith(PREFIX) else training).append(str(item))
    return own, training


def load_settings(own_overrides: Iterable[str] = ()) -> DictConfig:
    """conf/label_errors/default.yaml with `label_errors.<key>=value` overrides; an unknown key is refused."""
    settings = OmegaConf.load(SETTINGS_FILE)
    OmegaConf.set_struct(settings, True)
    for item in own_overrides:
        key, sep, value = str(item)[len(PREFIX):].partition("=")
        if not sep:
            raise ValueError(f"{item!r}: write label_errors.<key>=<value>, e.g. label_errors.confident_score=0.6")
        if key not in _keys(settings):
            raise ValueError(f"{item!r}: {SETTINGS_FILE} has no key {key!r}; its keys: {', '.join(sorted(_keys(settings)))}")
        OmegaConf.update(settings, key, yaml.safe_load(value) if value else None, merge=False)
    return settings


def _keys(node: DictConfig, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        keys.add(prefix + str(key))
        if isinstance(value, DictConfig):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys
