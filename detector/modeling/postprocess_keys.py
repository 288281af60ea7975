"""The test-time post-processing keys -- score threshold, NMS threshold, detections per image -- in
one place for every model= option.

R-CNN models (faster_rcnn_fpn, mask_rcnn_fpn, cascade_*) keep them in `model.roi_heads`, their
box heads' node; one-stage models (retinanet_fpn*, fcos_fpn) in `model.postprocess`, as torchvision's
RetinaNet and FCOS keep them on the model itself. `model.postprocess.<key>` is the name that works
for every model wherever a checkpoint's config is refined (load_model's overrides, predict,
export's --set): on an R-CNN checkpoint it sets `model.roi_heads.<key>`, and the old
`model.roi_heads.<key>` still works, also on a one-stage checkpoint (it sets
`model.postprocess.<key>`). Code that reads them from a built model asks `postprocess_module`.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from torch import nn

POSTPROCESS_KEYS = ("score_thresh", "nms_thresh", "detections_per_img")
ONE_STAGE_NODE = "postprocess"
RCNN_NODE = "roi_heads"


def postprocess_node(model_cfg: Mapping[str, Any]) -> str:
    """The node of `model_cfg` (a config's `model`) that holds the keys: "postprocess" or "roi_heads"."""
    node = model_cfg.get(ONE_STAGE_NODE) if hasattr(model_cfg, "get") else None
    return ONE_STAGE_NODE if isinstance(node, Mapping) or hasattr(node, "keys") else RCNN_NODE


def postprocess_key(model_cfg: Mapping[str, Any], key: str) -> str:
    """The dotted config key of post-processing `key` for this model, e.g. model.roi_heads.nms_thresh."""
    if key not in POSTPROCESS_KEYS:
        raise ValueError(f"'{key}' is not a post-processing key; valid: {', '.join(POSTPROCESS_KEYS)}.")
    return f"model.{postprocess_node(model_cfg)}.{key}"


def translate_overrides(model_cfg: Mapping[str, Any], overrides: Iterable[str]) -> list[str]:
    """`overrides` ("key=value") with each post-processing key moved to the node this model has
    (model.postprocess.K <-> model.roi_heads.K); every other override unchanged."""
    node = postprocess_node(model_cfg)
    translated = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        parts = key.strip().split(".")
        if sep and len(parts) == 3 and parts[0] == "model" and parts[1] in (ONE_STAGE_NODE, RCNN_NODE) \
                and parts[2] in POSTPROCESS_KEYS:
            item = f"model.{node}.{parts[2]}={value}"
        translated.append(item)
    return translated


def postprocess_module(model: nn.Module) -> nn.Module:
    """The module whose attributes score_thresh, nms_thresh and detections_per_img a built model
    applies: its RoI heads (R-CNN) or the model itself (one-stage)."""
    heads = getattr(model, "roi_heads", None)
    return heads if isinstance(heads, nn.Module) else model
