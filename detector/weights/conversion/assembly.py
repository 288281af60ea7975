"""The one assembly step: any converted record -> a checkpoint of this project, on disk.

Every source's converter returns one ConvertedWeights record (detector/weights/conversion/record.py);
this module alone turns it into a file, the same way for every source:

1. the config: composed from conf/ with the record's fields (converted_config.py), or the
   record's own stored config for a checkpoint of this project;
2. the class layers: with a class count other than the weights' (`--num-classes K`), every
   class-specific layer (each box predictor, the mask logits) is re-initialised for K classes;
3. the strict check: the weights are loaded strictly into the model (or, for a backbone, the
   ResNet body) that config builds, so a wrong conversion fails here, not when the file is used;
4. the write: atomic, in the format the output's suffix names (checkpoint_io.save_checkpoint).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from detector.weights.checkpoint_io import save_checkpoint
from detector.weights.conversion.coco_classes import COCO_IDS, COCO_NAMES, names_by_category_id
from detector.weights.conversion.converted_config import compose_converted_config
from detector.weights.conversion.record import ConvertedWeights
from detector.weights.state_dicts import load_state_dict_strict

logger = logging.getLogger(__name__)

PREDICTOR_PREFIX = "roi_heads.box_predictor."
# The class-specific layers, re-initialized when the class count changes: the box predictor
# (every stage's, for Cascade R-CNN) and the mask logits (the mask deconvolution is not per class).
CLASS_LAYER_PREFIXES = (PREDICTOR_PREFIX, "roi_heads.mask_predictor.mask_fcn_logits.")


def _weightless(config: dict):
    """`config` as a DictConfig that names no starting weights: the model is built to be checked
    and to lend fresh class layers, never to load other files."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(config)
    cfg.model.weights = None
    cfg.backbone.weights = None
    return cfg


def _weightless_model(kind: str, config: dict) -> torch.nn.Module:
    """What `config` builds for weights of `kind`: the whole detector, or for a backbone the
    ResNet body."""
    cfg = _weightless(config)
    if kind == "backbone":
        from detector.instantiate import instantiate

        return instantiate(cfg.backbone)
    from detector.modeling.build import build_model

    return build_model(cfg)


def coco_category_ids(class_names: list[str] | None) -> list[int] | None:
    """label -> COCO category id when the classes are COCO's (80 names, or torchvision's 90 ids)."""
    if class_names == COCO_NAMES:
        return list(COCO_IDS)
    if class_names is not None and class_names == names_by_category_id(len(class_names)):
        return list(range(1, len(class_names) + 1))   # torchvision: label == category id
    return None


def _stored_checkpoint(record: ConvertedWeights, num_classes: int | None) -> dict:
    """A checkpoint of this project, kept as it is: rewriting it in another format changes no
    tensor, and its weights were checked against its config when it was written."""
    stored_classes = record.config["model"]["num_classes"] if isinstance(record.config.get("model"), dict) else None
    if num_classes is not None and num_classes != stored_classes:
        raise ValueError(f"--num-classes {num_classes}: '{record.source}' is a checkpoint of this project "
                         f"({stored_classes} classes), rewritten as it is; re-initialising its class layers applies "
                         "to foreign weights (--source torchvision or detectron2) only.")
    checkpoint = {"model": dict(record.state), "iteration": record.iteration, "config": record.config}
    if record.category_ids is not None:
        checkpoint["category_ids"] = list(record.category_ids)
    return checkpoint


def assemble_checkpoint(record: ConvertedWeights, num_classes: int | None = None) -> dict:
    """The checkpoint dict of `record` (steps 1 to 3 of the module docstring), not yet written:
    {"model", "iteration", "config"} and "category_ids" when the classes are known to map to a
    dataset's (COCO's, or the record's own)."""
    if record.kind == "checkpoint":
        return _stored_checkpoint(record, num_classes)
    reinitialize = record.kind == "detector" and num_classes is not None and num_classes != record.num_classes
    if record.kind == "backbone":
        # The class count only labels the config a backbone file carries (as model.num_classes).
        classes, names, category_ids = (num_classes if num_classes is not None else record.num_classes,
                                        record.class_names, None)
    elif reinitialize:
        classes, names, category_ids = num_classes, None, None
    else:
        classes, names, category_ids = record.num_classes, record.class_names, record.category_ids
    # One config and one model: the model that config builds lends its fresh class layers (when
    # the class count changes) and then takes the weights strictly, so a wrong conversion fails here.
    config = compose_converted_config(record.backbone, record.model, classes, names)
    model = _weightless_model(record.kind, config)
    state = dict(record.state)
    if reinitialize:
        # Keep everything but the class-specific layers, re-initialized for the new classes.
        logger.info("Re-initializing the class layers (box predictor, mask logits) for %d classes (weights have %d).",
                    num_classes, record.num_classes)
        state = {k: v for k, v in state.items() if not k.startswith(CLASS_LAYER_PREFIXES)}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(CLASS_LAYER_PREFIXES)})
    load_state_dict_strict(model, state, record.source)
    checkpoint = {"model": state, "iteration": record.iteration, "config": config}
    if category_ids is None:
        category_ids = coco_category_ids(config["model"]["class_names"])
    if category_ids is not None:
        # label -> dataset category id, for writing COCO-format results (tools/predict.py reads it).
        checkpoint["category_ids"] = list(category_ids)
    return checkpoint


def write_converted(record: ConvertedWeights, output_path: str | os.PathLike, num_classes: int | None = None) -> Path:
    """The whole assembly step: assemble_checkpoint, then the atomic write (a .safetensors file
    when the name says so, otherwise a weights-only .pth); logs the record's usage hint."""
    checkpoint = assemble_checkpoint(record, num_classes)
    path = save_checkpoint(checkpoint, output_path)
    if record.usage:
        logger.info(record.usage.format(output=path))
    return path


def detection_checkpoint(state: dict[str, torch.Tensor], backbone: dict, model: dict, found_classes: int,
                         names: list[str] | None, num_classes: int | None, source: str) -> dict:
    """The checkpoint of converted detection weights (assemble_checkpoint of their record):
    `state` already in this project's names, the config built from the `backbone` and `model`
    fields that differ from conf/, and the COCO category ids when the classes are COCO's."""
    record = ConvertedWeights(state=state, kind="detector", source=source, backbone=backbone, model=model,
                              num_classes=found_classes, class_names=names)
    return assemble_checkpoint(record, num_classes)
