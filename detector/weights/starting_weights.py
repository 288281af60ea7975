"""The starting weights of one run, resolved and read once.

A run names the weights it starts from with `backbone.weights` and `model.weights`: files, or
published names (torchvision://..., detectron2://...) that are fetched, hash-checked and converted
on first use. Three steps need them before training: adopting the settings they were made with
(weight_settings.adopt_weight_settings), checking those settings, and loading the tensors into the
built model (loading.load_initial_weights). A `StartingWeights` is made once per run, on rank 0
first (`starting_weights_for_run`: fetching and converting must not happen in two processes at
once; the other ranks then read the cached conversion), and handed to those three steps, so each
file is resolved and read once.

A resumed run makes one from its checkpoint instead: the checkpoint replaces every weight, so the
starting weights are neither fetched, converted nor read; the settings they brought are those the
checkpoint's config records (the first run adopted them).

Layering: this module resolves names (zoo) and reads files (checkpoint_io, state_dicts); the
settings comparison (weight_settings) and the loading into models (loading) sit above it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from detector.utils.distributed import barrier, is_main_process
from detector.weights.checkpoint_io import read_checkpoint
from detector.weights.config_upgrade import upgrade_config
from detector.weights.zoo import is_published_name, lookup, resolve_weights

_ABSENT = object()   # a key the config does not have (None is a value: anchor_generator.strides)

# Dotted keys that a weights file's config and the run's config must agree on: any file's...
WEIGHT_SETTINGS = ("backbone.stride_in_1x1", "model.input.format", "model.input.pixel_mean", "model.input.pixel_std")
# ...and a whole detector's (model.weights), whose heads also depend on how anchors are laid out,
# how RoIs are pooled, what the regression deltas are scaled by, where the background class sits
# and how masks are pasted (Detectron2's masks were trained to be pasted its way). A backbone
# file's config holds conf/'s defaults for these, which must not replace the run's.
DETECTOR_SETTINGS = WEIGHT_SETTINGS + tuple(f"model.{key}" for key in (
    "anchor_generator.sizes", "anchor_generator.aspect_ratios", "anchor_generator.round_anchors",
    "anchor_generator.strides", "rpn.bbox_reg_weights", "roi_heads.pooler_sampling_ratio",
    "roi_heads.pooler_aligned", "roi_heads.canonical_box_size", "roi_heads.canonical_level",
    "roi_heads.bbox_reg_weights", "roi_heads.predictor_layout", "roi_heads.mask_paste"))

WEIGHTS_KEYS = ("backbone.weights", "model.weights")   # in load order: model.weights loads over the body


def settings_keys(weights_key: str) -> tuple[str, ...]:
    """The settings a file named by `weights_key` decides: a detector's all, a backbone's the input's."""
    return DETECTOR_SETTINGS if weights_key == "model.weights" else WEIGHT_SETTINGS


def recorded_settings(config: DictConfig | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """The `keys` a stored config records, as plain values (a bare state dict records none)."""
    if config is None:
        return {}
    found = {key: OmegaConf.select(config, key, default=_ABSENT) for key in keys}
    return {key: OmegaConf.to_object(v) if OmegaConf.is_config(v) else v for key, v in found.items() if v is not _ABSENT}


def stored_config(checkpoint: Mapping) -> DictConfig | None:
    """A checkpoint's config brought to today's layout; None when it carries none (a bare state
    dict, e.g. a torchvision download, whose "config" is no dict)."""
    config = checkpoint.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("backbone"), dict):
        return None
    return OmegaConf.create(upgrade_config(config) if isinstance(config.get("model"), dict) else config)


@dataclass
class WeightsFile:
    """One starting-weights file, resolved and read: its tensors until they are loaded, its config."""

    key: str                     # "model.weights" or "backbone.weights"
    name: str                    # as the config gives it: a path or a published name
    path: Path                   # the local file read (a published name's cached conversion)
    kind: str | None             # a published name's kind ("detector" or "backbone"); None for a file
    config: DictConfig | None    # the config the file records, upgraded; None for bare weights
    _state: dict[str, torch.Tensor] | None = field(repr=False, default=None)

    @property
    def setting(self) -> str:
        return f"{self.key}={self.name}"

    def take_state(self) -> dict[str, torch.Tensor]:
        """The file's tensors, handed over once: the run keeps this object (its config and
        settings) to its end, and must not keep a second copy of the weights with it."""
        if self._state is None:
            raise RuntimeError(f"The tensors of {self.setting} were already loaded into a model; read the "
                               "starting weights again (read_starting_weights(cfg)) to load them twice.")
        state, self._state = self._state, None
        return state


def read_weights_file(key: str, name: str) -> WeightsFile:
    """`name` resolved (a published name fetched and converted once, then cached) and read once.
    A backbone.weights name must be a published backbone; a model.weights name may be either kind
    (a classifier starts from a backbone's; loading checks the kind against the model)."""
    kind = lookup(name).kind if is_published_name(name) else None
    record = read_checkpoint(resolve_weights(name, expect="backbone" if key == "backbone.weights" else None))
    return WeightsFile(key, name, record.path, kind, stored_config(record.contents), record.state)


@dataclass
class StartingWeights:
    """What a run's starting weights bring: the files read (None for a key that is not set, and
    for both on a resume), and the settings of the file the model ends up with (model.weights
    when set, since it loads over backbone.weights)."""

    names: dict[str, str | None]          # the config's backbone.weights and model.weights
    files: dict[str, WeightsFile]         # the files read, by key
    settings: dict[str, Any]              # {dotted key: value} the deciding file records
    source: str                           # what the settings come from, for messages
    resumed_from: Path | None = None      # a resume's checkpoint: nothing is loaded, it replaces all

    @property
    def backbone(self) -> WeightsFile | None:
        return self.files.get("backbone.weights")

    @property
    def model(self) -> WeightsFile | None:
        return self.files.get("model.weights")

    def check_names(self, cfg: DictConfig) -> None:
        """Raise when cfg names other starting weights than those this object was made for."""
        if configured_names(cfg) != self.names:
            raise ValueError(f"The starting weights were read for {self.names}, but the config now names "
                             f"{configured_names(cfg)}; read them again with read_starting_weights(cfg).")


def configured_names(cfg: DictConfig) -> dict[str, str | None]:
    """{"backbone.weights": ..., "model.weights": ...}: what cfg names, None where unset."""
    names = {}
    for key in WEIGHTS_KEYS:
        value = OmegaConf.select(cfg, key)
        names[key] = str(value) if value else None
    return names


def _deciding_key(names: Mapping[str, str | None]) -> str | None:
    """model.weights loads over backbone.weights, so it decides the settings when both are set."""
    return next((key for key in reversed(WEIGHTS_KEYS) if names[key]), None)


def read_starting_weights(cfg: DictConfig) -> StartingWeights:
    """Resolve and read every starting-weights file cfg names, once."""
    names = configured_names(cfg)
    files = {key: read_weights_file(key, name) for key, name in names.items() if name}
    deciding = _deciding_key(names)
    if deciding is None:
        return StartingWeights(names, files, {}, "")
    chosen = files[deciding]
    return StartingWeights(names, files, recorded_settings(chosen.config, settings_keys(deciding)), chosen.setting)


def resumed_starting_weights(cfg: DictConfig, checkpoint: Mapping, path: str | os.PathLike) -> StartingWeights:
    """A resumed run's: no file read; the settings its starting weights brought, as the
    checkpoint's config records them (the first run adopted them before building its model)."""
    names = configured_names(cfg)
    deciding = _deciding_key(names)
    settings = recorded_settings(stored_config(checkpoint), settings_keys(deciding)) if deciding else {}
    source = f"{deciding}={names[deciding]}, as {path} records it," if deciding else ""
    return StartingWeights(names, {}, settings, source, resumed_from=Path(path))


def starting_weights_for_run(cfg: DictConfig, resume: tuple[Path, Mapping] | None = None) -> StartingWeights:
    """The run's starting weights, rank 0 first: a published name may be fetched and converted,
    which two processes must not do at once; the other ranks then read the cached conversion.
    `resume`: the (path, checkpoint) the run resumes from, whose weights replace the starting ones."""
    if resume is not None:
        return resumed_starting_weights(cfg, resume[1], resume[0])
    weights = read_starting_weights(cfg) if is_main_process() else None
    barrier()
    return weights if weights is not None else read_starting_weights(cfg)
