"""Converting foreign weight files into checkpoints of this project.

Every output carries its config, so `load_model(OUT)` (or `model.weights=OUT`) needs no
other flag. Detection outputs are checked before writing: the model is built from the
carried config and the weights are loaded into it strictly.

An output named `*.safetensors` is written as safetensors (tensors plus the config as JSON
metadata, no pickle), any other as a weights-only `.pth`. `source="checkpoint"` takes a
checkpoint of this project (`.pth` or `.safetensors`) and rewrites it in the output's
format: the way to export weights to safetensors and to import them back.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from detector.weights.checkpoint_io import save_checkpoint
from detector.weights.coco_classes import COCO_IDS, COCO_NAMES, names_by_category_id
from detector.weights.state_dicts import load_state_dict_strict, read_state_dict

logger = logging.getLogger(__name__)

SOURCES = ("torchvision", "detectron2", "checkpoint")
PREDICTOR_PREFIX = "roi_heads.box_predictor."
# The class-specific layers, re-initialized when the class count changes: the box predictor
# (every stage's, for Cascade R-CNN) and the mask logits (the mask deconvolution is not per class).
CLASS_LAYER_PREFIXES = (PREDICTOR_PREFIX, "roi_heads.mask_predictor.mask_fcn_logits.")


def _override_value(value) -> str:
    """`value` in Hydra's override syntax (quoted strings, [a,b] lists, null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a config override.")


def _field_overrides(prefix: str, fields: dict) -> list[str]:
    """Nested `fields` as "prefix.key=value" overrides."""
    overrides = []
    for key, value in fields.items():
        if isinstance(value, dict):
            overrides += _field_overrides(f"{prefix}.{key}", value)
        else:
            overrides.append(f"{prefix}.{key}={_override_value(value)}")
    return overrides


def compose_converted_config(backbone: dict, model: dict, num_classes: int | None,
                             class_names: list[str] | None) -> dict:
    """The config a converted checkpoint carries, composed from conf/ like any run's
    (`load_config`): the backbone option `backbone["name"]` names (resnet50 for a ResNet conf/
    has no file for, with its blocks set), the model option `model["name"]` names (default
    faster_rcnn_fpn), then the converted fields that differ as overrides. schedule=1x: the
    model as conf/model defines it, not lightened by a CPU recipe. Stored fully resolved."""
    from omegaconf import OmegaConf

    from detector.config import CONFIG_DIR, load_config

    backbone, model = dict(backbone), dict(model)
    option = str(backbone.get("name"))
    known = (CONFIG_DIR / "backbone" / f"{option}.yaml").is_file()
    model_option = model.pop("name", "faster_rcnn_fpn")
    overrides = ["schedule=1x", f"backbone={option if known else 'resnet50'}", f"model={model_option}"]
    overrides += _field_overrides("backbone", backbone)
    overrides += _field_overrides("model", model)
    overrides += [f"model.num_classes={_override_value(num_classes)}",
                  f"model.class_names={_override_value(class_names)}"]
    return OmegaConf.to_container(load_config(overrides), resolve=True)


def _reinitialized_predictor(config: dict, num_classes: int) -> dict[str, torch.Tensor]:
    """Freshly initialized class layers for `num_classes` (for fine-tuning elsewhere)."""
    from omegaconf import OmegaConf

    from detector.modeling.build import build_model

    cfg = OmegaConf.create(config)
    cfg.model.num_classes = num_classes
    cfg.model.weights = None
    cfg.backbone.weights = None
    model = build_model(cfg)
    return {k: v for k, v in model.state_dict().items() if k.startswith(CLASS_LAYER_PREFIXES)}


def _check_loadable(config: dict, state: dict[str, torch.Tensor], source: str) -> None:
    from omegaconf import OmegaConf

    from detector.modeling.build import build_model

    cfg = OmegaConf.create(config)
    cfg.model.weights = None
    cfg.backbone.weights = None
    load_state_dict_strict(build_model(cfg), state, source)


def convert_weights(source: str, input_path: str | os.PathLike, output_path: str | os.PathLike,
                    num_classes: int | None = None, coco80: bool = False) -> Path:
    if source not in SOURCES:
        raise ValueError(f"--source '{source}' is not supported; valid choices: {', '.join(SOURCES)}.")
    from detector.weights import zoo

    if zoo.is_published_name(input_path):
        # A published name (torchvision://..., detectron2://...): the publisher's file, fetched
        # into the torch hub cache and hash checked, converted like any local file.
        entry = zoo.lookup(input_path)
        if entry.source != source:
            raise ValueError(f"{entry.name} is a {entry.source} file: use --source {entry.source}.")
        input_path = zoo.fetch(entry)[0]
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input weights '{input_path}' do not exist.")
    if source == "checkpoint":
        from detector.weights.safetensors_io import read_checkpoint_with_config

        checkpoint = read_checkpoint_with_config(input_path)
        if not isinstance(checkpoint.get("config"), dict):
            raise ValueError(f"'{input_path}' carries no config: it is not a checkpoint of this project "
                             "(use --source torchvision or detectron2 for foreign weights).")
        kept = {k: checkpoint[k] for k in ("model", "iteration", "config", "category_ids") if k in checkpoint}
        return write_checkpoint(kept, output_path)
    if source == "detectron2":
        from detector.weights.detectron2_conversion import convert_detectron2
        from detector.weights.restricted_pickle import load_restricted_pickle

        if input_path.suffix != ".pkl":
            raise ValueError(f"Detectron2 weights are .pkl files; got '{input_path}'.")
        data = load_restricted_pickle(input_path)
        from detector.weights.caffe2_resnet import caffe2_blobs, convert_caffe2_resnet

        blobs = caffe2_blobs(data)
        if blobs is not None:   # an ImageNet ResNet (e.g. ImageNetPretrained/MSRA/R-50.pkl): backbone weights
            body, backbone, model = convert_caffe2_resnet(blobs)
            config = compose_converted_config(backbone, model, num_classes, None)
            _check_body_loadable(config, body, str(input_path))
            logger.info("Backbone %s: use it with backbone.weights=%s backbone.stride_in_1x1=true model.input.format=BGR "
                        "and Detectron2's pixel mean/std (see docs/model_zoo.md)", backbone["name"], output_path)
            return write_checkpoint({"model": body, "iteration": 0, "config": config}, output_path)
        state, backbone, model, found_classes, names = convert_detectron2(data)
        return _write_detection(state, backbone, model, found_classes, names, num_classes, output_path, input_path)

    from detector.weights.torchvision_conversion import checkpoint_from_torchvision, is_torchvision_classification

    raw, _ = read_state_dict(input_path)
    checkpoint = checkpoint_from_torchvision(raw, num_classes, coco80, source=str(input_path))
    if is_torchvision_classification(raw):
        logger.info("Backbone %s: use it with backbone.weights=%s", checkpoint["config"]["backbone"]["name"], output_path)
    return write_checkpoint(checkpoint, output_path)


def _check_body_loadable(config: dict, body: dict[str, torch.Tensor], source: str) -> None:
    from omegaconf import OmegaConf

    from detector.instantiate import instantiate

    load_state_dict_strict(instantiate(OmegaConf.create(config).backbone), body, source)


def _write_detection(state, backbone, model, found_classes, names, num_classes, output_path, input_path) -> Path:
    return write_checkpoint(detection_checkpoint(state, backbone, model, found_classes, names, num_classes,
                                                 str(input_path)), output_path)


def detection_checkpoint(state: dict[str, torch.Tensor], backbone: dict, model: dict, found_classes: int,
                         names: list[str] | None, num_classes: int | None, source: str) -> dict:
    """The checkpoint of converted detection weights: `state` (already in this project's names),
    the config built from the `backbone` and `model` fields that differ from conf/, and the COCO
    category ids when the classes are COCO's. Loaded strictly into the model that config builds
    first, so a wrong conversion fails here rather than when the file is used."""
    config = compose_converted_config(backbone, model, found_classes, names)
    if num_classes is not None and num_classes != found_classes:
        # Keep everything but the class-specific layers, re-initialized for the new classes.
        logger.info("Re-initializing the class layers (box predictor, mask logits) for %d classes (weights have %d).",
                    num_classes, found_classes)
        state = {k: v for k, v in state.items() if not k.startswith(CLASS_LAYER_PREFIXES)}
        state.update(_reinitialized_predictor(config, num_classes))
        config = compose_converted_config(backbone, model, num_classes, None)
    _check_loadable(config, state, source)
    checkpoint = {"model": state, "iteration": 0, "config": config}
    category_ids = coco_category_ids(config["model"]["class_names"])
    if category_ids is not None:
        # label -> COCO category id, for writing COCO-format results (tools/predict.py reads it).
        checkpoint["category_ids"] = category_ids
    return checkpoint


def write_checkpoint(checkpoint: dict, output_path: str | os.PathLike) -> Path:
    """A .safetensors file when the name says so (model, config, iteration, category ids),
    otherwise a weights-only .pth."""
    if str(output_path).endswith(".safetensors"):
        from detector.weights.safetensors_io import export_safetensors

        return export_safetensors(checkpoint, output_path)
    return save_checkpoint(checkpoint, output_path)


def coco_category_ids(class_names: list[str] | None) -> list[int] | None:
    if class_names == COCO_NAMES:
        return list(COCO_IDS)
    if class_names is not None and class_names == names_by_category_id(len(class_names)):
        return list(range(1, len(class_names) + 1))   # torchvision: label == category id
    return None
