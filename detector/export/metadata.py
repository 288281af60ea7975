"""What an exported file says about itself, so that it is used alone, without its checkpoint.

Every exported file (ONNX `metadata_props`, OpenVINO `rt_info` under "detector", a TorchScript
archive's extra file) carries the same string entries, written from one `ExportMetadata`:

    class_names        JSON list, label 1 is the first name
    category_ids       JSON list, the dataset's category id of each label (for COCO results)
    outputs            JSON list, the graph's outputs in order (boxes, scores, labels[, masks, ...])
    input              JSON: the tensor the graph takes (name, layout CHW, float32, values in
                       [0, 1], RGB) and what the graph does to it (the model's channel order,
                       pixel_mean / pixel_std on the [0, 1] scale, the eval resize, padding)
    postprocess        JSON: the test-time settings baked into the graph, by config key
                       (score threshold, NMS thresholds, detections per image, proposal counts)
    config             YAML: the source checkpoint's config, as the model was built from it
    source, iteration  the checkpoint exported and the iteration it was written at
    format, precision  onnx | openvino | torchscript; the weights' precision (f32, or int8 for
                       an int8 OpenVINO file: detector-export --int8)
    calibration        int8 only, JSON: the dataset, split, image count and seed calibrated on
    quantization       int8 only, JSON: the tool (nncf.quantize), its version and the float scope

Strings because ONNX and OpenVINO store strings; `from_strings` is the one decoder
(detector.deploy.metadata_reader reads the entries out of each kind of file).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

VERSION = 1
# The settings of cfg.model applied after the network, which the traced graph holds as constants.
POSTPROCESS_KEYS = ("score_thresh", "nms_thresh", "detections_per_img", "pre_nms_topk_test", "post_nms_topk_test",
                    "min_box_size", "topk_candidates", "mask_paste")
INPUT = {"name": "image", "layout": "CHW", "dtype": "float32", "value_range": [0.0, 1.0], "channels": "RGB"}


class MetadataError(ValueError):
    """An exported file without (or with unreadable) detector metadata."""


@dataclass(frozen=True)
class ExportMetadata:
    class_names: list[str]
    category_ids: list[int]
    outputs: list[str]
    input: dict[str, Any]
    postprocess: dict[str, Any]
    config_yaml: str
    source: str
    iteration: int | None
    format: str
    precision: str = "f32"
    extra: dict[str, str] = field(default_factory=dict)   # entries a later export adds (e.g. calibration)

    def config(self) -> DictConfig:
        """The source checkpoint's config (model, backbone and the rest of its run)."""
        return OmegaConf.create(self.config_yaml)

    def to_strings(self) -> dict[str, str]:
        entries = {"version": str(VERSION), "class_names": json.dumps(self.class_names),
                   "category_ids": json.dumps(self.category_ids), "outputs": json.dumps(self.outputs),
                   "input": json.dumps(self.input), "postprocess": json.dumps(self.postprocess),
                   "config": self.config_yaml, "source": self.source,
                   "iteration": "" if self.iteration is None else str(self.iteration),
                   "format": self.format, "precision": self.precision}
        entries.update(self.extra)
        return entries

    @classmethod
    def from_strings(cls, entries: Mapping[str, str], where: str) -> "ExportMetadata":
        """Decode what to_strings wrote; `where` names the file in errors."""
        missing = [key for key in ("version", "class_names", "outputs", "config") if key not in entries]
        if missing:
            raise MetadataError(f"'{where}' carries no detector metadata ({', '.join(missing)} missing): it was not "
                                "written by detector-export, or by an older version. Export it again from its "
                                "checkpoint: detector-export --weights CKPT --format onnx|openvino|torchscript.")
        try:
            known = {"version", "class_names", "category_ids", "outputs", "input", "postprocess", "config", "source",
                     "iteration", "format", "precision"}
            names = json.loads(entries["class_names"])
            return cls(class_names=names,
                       category_ids=json.loads(entries.get("category_ids") or json.dumps(list(range(1, len(names) + 1)))),
                       outputs=json.loads(entries["outputs"]), input=json.loads(entries.get("input", "{}")),
                       postprocess=json.loads(entries.get("postprocess", "{}")), config_yaml=entries["config"],
                       source=entries.get("source", ""),
                       iteration=int(entries["iteration"]) if entries.get("iteration") else None,
                       format=entries.get("format", ""), precision=entries.get("precision", "f32"),
                       extra={k: v for k, v in entries.items() if k not in known})
        except (ValueError, TypeError) as error:
            raise MetadataError(f"'{where}': its detector metadata cannot be read ({error}).") from None


def postprocess_settings(model_cfg: DictConfig) -> dict[str, Any]:
    """{dotted key under model: value} of every POSTPROCESS_KEYS entry in the model's config,
    whatever the head (RoI heads, RPN, a one-stage head): what the graph bakes in."""
    found = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif key in POSTPROCESS_KEYS:
                found[f"model.{prefix}{key}"] = value
    walk(OmegaConf.to_container(model_cfg, resolve=True), "")
    return found


def input_description(model_cfg: DictConfig) -> dict[str, Any]:
    """The graph's input (INPUT) and what the graph itself does to it before the network."""
    pre = model_cfg.input
    return {**INPUT, "model_channels": str(pre.format), "pixel_mean": list(pre.pixel_mean),
            "pixel_std": list(pre.pixel_std), "min_size_test": int(pre.min_size_test),
            "max_size_test": int(pre.max_size_test), "size_divisibility": int(pre.size_divisibility)}


def metadata_for(config: DictConfig, outputs: list[str], format: str, source: str, iteration: int | None = None,
                 category_ids: list[int] | None = None, precision: str = "f32") -> ExportMetadata:
    """The metadata of a model built from `config` (a checkpoint's, overrides applied)."""
    names = [str(n) for n in (config.model.class_names or [])]
    if not names:
        names = [str(i) for i in range(1, int(config.model.num_classes) + 1)]
    return ExportMetadata(class_names=names, category_ids=list(category_ids or range(1, len(names) + 1)),
                          outputs=list(outputs), input=input_description(config.model),
                          postprocess=postprocess_settings(config.model),
                          config_yaml=OmegaConf.to_yaml(config, resolve=True), source=str(source),
                          iteration=iteration, format=format, precision=precision)
