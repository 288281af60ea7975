"""Weight files into models: the one place that loads them.

`detector.modeling` builds architectures and never reads files; this module builds through it
(weights -> modeling, never the reverse). A checkpoint is rebuilt from the config it carries
alone (brought to today's layout by `upgrade_config`), never from conf/.

- `load_model(path)`: the model a checkpoint describes, with its weights, in eval mode; in two
  steps, `read_model_checkpoint` (resolve and read the file once) and `model_from_checkpoint`, for
  callers that need more of the file (its iteration, its category ids).
- `load_initial_weights(model, cfg, logger, weights)`: the starting weights a run config names
  (`backbone.weights`, `model.weights`), for a detector or a classifier; `weights` is the run's
  StartingWeights (detector/weights/starting_weights.py), read once for settings and loading.
- `load_weights_into`, `load_backbone_weights`, `load_classifier_weights`: one file into one
  module, strictly (every key must match, except what each docstring sets aside).
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Mapping

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from detector.modeling.backbone.resnet import ResNet
from detector.modeling.build import build_model
from detector.modeling.classifier import HEAD_KEYS, ResNetClassifier
from detector.modeling.postprocess_keys import translate_overrides
from detector.weights.checkpoint_io import CheckpointRecord, read_checkpoint
from detector.weights.config_upgrade import upgrade_config
from detector.weights.starting_weights import StartingWeights, read_starting_weights
from detector.weights.state_dicts import load_state_dict_strict, read_state_dict, strip_prefix
from detector.weights.weight_settings import refuse_differing_settings
from detector.weights.zoo import resolve_weights

logger = logging.getLogger(__name__)


# --- Detectors -------------------------------------------------------------------------------

def load_weights_into(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a checkpoint of this project (or a .safetensors file) into `model`, strictly.
    Returns the whole checkpoint dict (e.g. for its "iteration"). `path` may be a published
    name (torchvision://..., detectron2://...; see detector/weights/zoo.py)."""
    state, checkpoint = read_state_dict(resolve_weights(path, expect="detector"))
    load_state_dict_strict(model, state, source=str(path))
    logger.info("Loaded weights from %s", path)
    return checkpoint


def load_backbone_weights(body: ResNet, path: str | os.PathLike) -> None:
    """ImageNet weights for the ResNet body: a torchvision classification state dict, a
    classifier checkpoint of this project, or a backbone checkpoint written by
    tools/convert_weights.py. The classifier's `fc.*` and stages the body does not build
    (when out_features stops early) are set aside; everything else must match exactly.
    `path` may be a published name, e.g. torchvision://resnet50."""
    state, _ = read_state_dict(resolve_weights(path, expect="backbone"))
    _load_backbone_state(body, state, str(path))


# Where a ResNet body's keys may sit in a file: a DDP wrapper, a detector's or a backbone's.
BODY_PREFIXES = ("module.", "backbone.body.", "body.", "backbone.")


def _load_backbone_state(body: ResNet, state: Mapping[str, torch.Tensor], source: str) -> None:
    built = body.built_stage_prefixes()
    unused_stage = tuple(f"layer{i}." for i in range(1, 5) if f"layer{i}." not in built)
    load_state_dict_strict(body, state, source=source, strip=BODY_PREFIXES, set_aside=("fc.",) + unused_stage)
    logger.info("Loaded backbone weights from %s", source)


def load_initial_weights(model: nn.Module, cfg: DictConfig, logger: logging.Logger | None = None,
                         weights: StartingWeights | None = None) -> None:
    """The starting weights `cfg` names, into the model `build_model(cfg)` made.

    Detector: `backbone.weights` into its ResNet body (model.backbone.body), then
    `model.weights` into the whole model, both strictly (a full checkpoint overrides the
    body it also holds). The input settings the deciding file records (model.weights, else
    backbone.weights) must be cfg's (detector/weights/weight_settings.py). Classifier
    (conf/cls.yaml): `model.weights` (the fc head is re-initialised when its class count
    differs) or `backbone.weights` (the body only), not both.

    `weights`: the StartingWeights already read (load_starting_weights); without it the files
    cfg names are read now."""
    load_starting_weights(model, cfg, weights if weights is not None else read_starting_weights(cfg), logger)


def load_starting_weights(model: nn.Module, cfg: DictConfig, weights: StartingWeights,
                          logger: logging.Logger | None = None) -> None:
    """A run's starting weights, read once before its settings were adopted (engine/run.py), into
    its model, as load_initial_weights describes; their tensors are handed over here. A resumed
    run's loads nothing: its checkpoint replaces every weight next."""
    weights.check_names(cfg)
    refuse_differing_settings(cfg, weights)   # weights made with another input or stride load cleanly, then mislead
    if weights.resumed_from is not None:
        return
    if isinstance(model, ResNetClassifier):
        _load_initial_classifier_weights(model, weights, logger)
        return
    if weights.backbone is not None:
        body = getattr(getattr(model, "backbone", None), "body", None)
        if not isinstance(body, ResNet):
            raise ValueError(f"{weights.backbone.setting} loads a ResNet body, but this model's backbone "
                             f"is {type(body).__name__ if body is not None else 'absent'}; set backbone.weights=null "
                             "(or load the whole model with model.weights).")
        _load_backbone_state(body, weights.backbone.take_state(), weights.backbone.name)
    if weights.model is not None:
        file = weights.model
        load_state_dict_strict(model, file.take_state(), source=file.name)
        logging.getLogger(__name__).info("Loaded weights from %s", file.name)


# --- Checkpoints that carry their config -----------------------------------------------------

def config_from_checkpoint(checkpoint: dict, source: str, overrides: Iterable[str] = ()) -> DictConfig:
    """The checkpoint's own config, brought to today's layout by
    `detector.weights.config_upgrade.upgrade_config` (conf/ is not read), then `overrides`
    ("key=value") applied. Unknown keys are errors."""
    if "config" not in checkpoint or not isinstance(checkpoint["config"], dict):
        raise ValueError(f"Checkpoint '{source}' carries no 'config'; it cannot be rebuilt on its own. "
                         "Build the model with build_model(cfg) and load_weights_into(model, path), or convert "
                         "foreign weights with tools/convert_weights.py.")
    for key in ("backbone", "model"):
        if not isinstance(checkpoint["config"].get(key), dict):
            raise ValueError(f"Checkpoint '{source}' config has no '{key}' section.")
    cfg = OmegaConf.create(upgrade_config(checkpoint["config"]))
    OmegaConf.set_struct(cfg, True)
    # model.postprocess.<key> and model.roi_heads.<key> reach whichever node this model has.
    overrides = translate_overrides(cfg.model, list(overrides))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override '{item}' must look like key=value (e.g. model.roi_heads.score_thresh=0.0).")
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        except Exception as error:
            raise ValueError(f"Cannot apply overrides {overrides} to the config of '{source}': {error}") from None
    return cfg


def read_model_checkpoint(path: str | os.PathLike) -> CheckpointRecord:
    """The checkpoint a model is rebuilt from, read once: its state dict, config, iteration and
    category ids (detector/weights/checkpoint_io.py's record). `path` may be a published name
    (fetched and converted once, then cached)."""
    return read_checkpoint(resolve_weights(path, expect="detector"))


def model_from_checkpoint(checkpoint: CheckpointRecord, source: str, overrides: Iterable[str] = (),
                          device: str = "cpu") -> nn.Module:
    """The model a checkpoint (read_model_checkpoint) describes, built by build_model from its
    own config (overrides applied), its weights loaded strictly, in eval mode on `device`, its
    config as `model.config`. `source` names the file in messages."""
    cfg = config_from_checkpoint(checkpoint.contents, source, overrides)
    with open_dict(cfg):
        # The weights come from this file; do not load any other.
        cfg.model.weights = None
        cfg.backbone.weights = None
    model = build_model(cfg)
    load_state_dict_strict(model, checkpoint.state, source=source)
    model.config = cfg
    return model.to(device).eval()


def load_model(path: str | os.PathLike, overrides: Iterable[str] = (), device: str = "cpu") -> nn.Module:
    """Rebuild the model from the config a checkpoint carries (through build_model), load its
    weights strictly and return it in eval mode, its config as `model.config`. `overrides`
    are "key=value" strings, e.g. ["model.roi_heads.score_thresh=0.0"]. `path` may be a
    published name, e.g. torchvision://fasterrcnn_resnet50_fpn (fetched and converted once,
    then cached)."""
    return model_from_checkpoint(read_model_checkpoint(path), str(path), overrides, device)


# --- Classifiers -----------------------------------------------------------------------------

def classifier_state_from_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A classifier state dict from a checkpoint of this project ({"model": ...}), a
    .safetensors file or a bare torchvision state dict; DDP's "module." prefix removed.
    A published name (e.g. torchvision://resnet50) reads its cached conversion."""
    state, _ = read_state_dict(resolve_weights(path))
    return strip_prefix(state, "module.")


def load_classifier_weights(model: ResNetClassifier, state: Mapping[str, torch.Tensor] | str | os.PathLike,
                            source: str | None = None, logger: logging.Logger | None = None) -> list[str]:
    """Load `state` (a state dict, or a file / published name read by
    classifier_state_from_file) into `model` with strict key checks, except that an fc head of
    another shape (a different number of classes, e.g. ImageNet's 1000) is left freshly
    initialised. `source` names the weights in messages (default: the path).

    Returns the keys that were re-initialised (and logs them); every other missing,
    unexpected or mis-shaped key raises WeightsMismatchError naming it.
    """
    if not isinstance(state, Mapping):
        source = source or str(state)
        state = classifier_state_from_file(state)
    return _load_classifier_state(model, state, source or "classifier state dict", logger)


def _load_classifier_state(model: ResNetClassifier, state: Mapping[str, torch.Tensor], source: str,
                           logger: logging.Logger | None) -> list[str]:
    logger = logger or logging.getLogger("detector")
    state = dict(state)
    expected = model.state_dict()
    reinitialised = [k for k in HEAD_KEYS if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if reinitialised:
        old = int(state["fc.weight"].shape[0]) if "fc.weight" in state else "?"
        model.reset_head()
        fresh = model.state_dict()
        for key in HEAD_KEYS:
            state[key] = fresh[key]  # the model's own new head, so the strict load keeps it
        reinitialised = list(HEAD_KEYS)
        logger.info("Weights from %s have an fc head for %s classes, this model has %d: re-initialised %s; "
                    "every other key was loaded.", source, old, model.num_classes, ", ".join(reinitialised))
    load_state_dict_strict(model, state, source=source)
    logger.info("Loaded classifier weights from %s.", source)
    return reinitialised


def load_classifier_body_weights(model: ResNetClassifier, path: str | os.PathLike,
                                 logger: logging.Logger | None = None) -> None:
    """The ResNet body from `path` (a torchvision file, a classifier checkpoint, or a backbone
    written with a "backbone.body." prefix), strictly; the fc head stays new."""
    _load_classifier_body_state(model, classifier_state_from_file(path), str(path), logger)


def _load_classifier_body_state(model: ResNetClassifier, state: Mapping[str, torch.Tensor], source: str,
                                logger: logging.Logger | None) -> None:
    # The fc head is set aside: the model keeps its own, new one.
    load_state_dict_strict(model, state, source=source, strip=BODY_PREFIXES, set_aside=("fc.",))
    (logger or logging.getLogger("detector")).info("Loaded backbone weights from %s; the fc head (%d classes) is new.",
                                                   source, model.num_classes)


def _load_initial_classifier_weights(model: ResNetClassifier, weights: StartingWeights,
                                     logger: logging.Logger | None) -> None:
    if weights.model is not None and weights.backbone is not None:
        raise ValueError(f"Both {weights.model.setting} and {weights.backbone.setting} are set; "
                         "pick one (model.weights loads the whole classifier, backbone.weights the body only).")
    if weights.model is not None:
        file = weights.model
        _load_classifier_state(model, strip_prefix(file.take_state(), "module."), file.name, logger)
    elif weights.backbone is not None:
        _load_classifier_body_state(model, weights.backbone.take_state(), weights.backbone.name, logger)
