"""The starting weights of one run, resolved and read once.

A run names the weights it starts from with `backbone.weights` and `model.weights`: files, or
published names (torchvision://..., detectron2://...) that are fetched, hash-checked and converted
on first use. Three steps need them before training: adopting the settings they were made with
(weight_settings.adopt_settings), checking those settings, and loading the tensors into the built
model (loading.load_starting_weights). A `StartingWeights` is made once per run, on rank 0
first (`starting_weights_for_run`: fetching and converting must not happen in two processes at
once; the other ranks then read the cached conversion), and handed to those three steps, so each
file is resolved and read once.

A resumed run makes one from its checkpoint instead: the checkpoint replaces every weight, so the
starting weights are neither fetched, converted nor read; the settings they brought are those the
checkpoint's config records (the first run adopted them).

Layering: this module resolves names (zoo) and reads files (checkpoint_io's one reader); the
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
from detector.weights.checkpoint_io import CheckpointRecord, read_checkpoint
from detector.weights.config_upgrade import CLASSIFIER
from detector.weights.zoo import resolve_weights

_ABSENT = object()   # a key the config does not have (None is a value: anchor_generator.strides)

# Dotted keys that a weights file's config and the run's config must agree on: any file's...
WEIGHT_SETTINGS = ("backbone.stride_in_1x1", "model.input.format", "model.input.pixel_mean", "model.input.pixel_std")
# ...and a whole detector's (model.weights), whose heads also depend on how anchors are laid out,
# how RoIs are pooled, what the regression deltas are scaled by, where the background class sits
# and how masks are pasted (Detectron2's masks were trained to be pasted its way). A backbone
# file's config holds conf/'s defaults for these, which must not replace the run's.
DETECTOR_SETTINGS = WEIGHT_SETTINGS + tuple(f"model.{key}" for key in (
    "anchor_generator.sizes", "anchor_generator.aspect_ratios", "anchor_generator.round_anchors",
    "anchor_generator.strides", "anchor_generator.octave_scales", "rpn.bbox_reg_weights", "roi_heads.pooler_sampling_ratio",
    "roi_heads.pooler_aligned", "roi_heads.canonical_box_size", "roi_heads.canonical_level",
    "roi_heads.bbox_reg_weights", "roi_heads.predictor_layout", "roi_heads.mask_paste",
    "roi_heads.keypoint_decoding"))

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


def stored_config(record: CheckpointRecord) -> DictConfig | None:
    """A checkpoint's config in today's layout (the reader upgrades it); None when it carries none
    (a bare state dict, e.g. a torchvision download) or one without a backbone section."""
    stored = record.stored_config
    if stored is None or not isinstance(stored.get("backbone"), dict):
        return None
    return OmegaConf.create(record.config)


@dataclass
class WeightsFile:
    """One starting-weights file, resolved and read: its tensors until they are loaded, its config."""

    key: str                     # "model.weights" or "backbone.weights"
    name: str                    # as the config gives it: a path or a published name
    path: Path                   # the local file read (a published name's cached conversion)
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


def read_weights_file(key: str, name: str, expect: str) -> WeightsFile:
    """`name` resolved (a published name fetched and converted once, then cached; refused before
    any download when it holds another kind than `expect`) and read once."""
    path = resolve_weights(name, expect=expect)
    record = read_checkpoint(path)
    return WeightsFile(key, name, record.path, stored_config(record), record.state)


def expected_kind(cfg: DictConfig, key: str) -> str:
    """What a published name under `key` must hold: ImageNet backbone weights for backbone.weights,
    and for a classifier's model.weights (a ResNet and its fc head, conf/cls.yaml); a whole
    detector for a detector's model.weights."""
    if key == "backbone.weights" or OmegaConf.select(cfg, "model._target_") == CLASSIFIER:
        return "backbone"
    return "detector"


@dataclass
class StartingWeights:
    """What a run's starting weights bring: the files read (none for a key that is not set, and
    none at all on a resume), and the settings of the file the model ends up with (model.weights
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
    files = {}
    for key in WEIGHTS_KEYS:
        name = OmegaConf.select(cfg, key)
        if name:
            files[key] = read_weights_file(key, str(name), expected_kind(cfg, key))
    names = configured_names(cfg)
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
    config = stored_config(CheckpointRecord(Path(path), dict(checkpoint)))
    settings = recorded_settings(config, settings_keys(deciding)) if deciding else {}
    source = f"{deciding}={names[deciding]}, as {path} records it," if deciding else ""
    return StartingWeights(names, {}, settings, source, resumed_from=Path(path))


def starting_weights_for_run(cfg: DictConfig, resume: tuple[Path, Mapping] | None = None) -> StartingWeights:
    """The run's starting weights, rank 0 first: a published name may be fetched and converted,
    which two processes must not do at once; the other ranks then read the cached conversion.
    `resume`: the (path, checkpoint) the run resumes from, whose weights replace the starting ones."""
    if resume is None:
        weights = read_starting_weights(cfg) if is_main_process() else None
        barrier()
        return weights if weights is not None else read_starting_weights(cfg)
    return resumed_starting_weights(cfg, resume[1], resume[0])
