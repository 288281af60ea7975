"""Configs stored in checkpoints written by earlier versions, brought to today's layout.

A checkpoint carries the fully resolved config it was trained with, and the model is rebuilt
from it alone (detector.weights.loading). Keys added to conf/ since a checkpoint was written
are filled here, explicitly and in one place -- as Detectron2 upgrades its stored configs --
with the value that gives the behaviour such a checkpoint always had; conf/ is not read.
"""
from __future__ import annotations

import copy
from typing import Any

RESNET = "detector.modeling.backbone.resnet.ResNet"

# Detection models (conf/model/faster_rcnn_fpn*.yaml): the builder of each component node.
DETECTION_TARGETS = {
    "": "detector.modeling.build.faster_rcnn_fpn",
    "input": "detector.modeling.build.image_preprocessor",
    "fpn": "detector.modeling.backbone.fpn.FPN",
    "anchor_generator": "detector.modeling.anchor_generator.AnchorGenerator",
    "rpn": "detector.modeling.build.region_proposal_network",
    "roi_heads": "detector.modeling.roi_heads.standard_roi_heads",
}

# Builders that moved to another module after checkpoints stored their `_target_`: the stored
# path -> where the same builder, building the same model, is now.
MOVED_TARGETS = {
    "detector.modeling.build.standard_roi_heads": "detector.modeling.roi_heads.standard_roi_heads",
    "detector.modeling.mask_head.mask_roi_heads": "detector.modeling.mask_roi_heads.mask_roi_heads",
}

# Keys added to the detection model config after the first release, with the value in effect
# for checkpoints written before them.
DETECTION_KEYS_ADDED = {
    "channels_last": True,            # a speed setting: float rounding only
    "fold_norms": True,               # a speed setting: float rounding only
    "anchor_generator.strides": None,  # image size // feature size per level, as always
    "roi_heads.conv_norm": "",
    "roi_heads.min_box_size": 0.01,
}

# Keys added to a component node after the config-to-objects layout (`_target_`), by the builder
# that node names, with the value in effect for checkpoints written before them.
NODE_KEYS_ADDED = {
    # Mask models' pasting (conf/model/mask_rcnn_fpn*.yaml, cascade_rcnn_fpn.yaml): torchvision's,
    # the only way before the key existed.
    "detector.modeling.mask_roi_heads.mask_roi_heads": {"mask_paste": "torchvision"},
    "detector.modeling.cascade.cascade_roi_heads": {"mask_paste": "torchvision"},
}

BACKBONE_KEYS_ADDED = {"base_channels": 64}

CLASSIFIER = "detector.modeling.classifier.build_resnet_classifier"
CLASSIFIER_KEYS_ADDED = {"dropout": 0.0, "fold_norms": True}


def _set_missing(node: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node.setdefault(leaf, value)


def _box_head_node(roi_heads: dict) -> dict:
    """model.roi_heads.box_head was the name fc | conv4fc; it is now the node that builds the head."""
    kind = roi_heads.get("box_head", "fc")
    if isinstance(kind, dict):
        return kind
    if kind == "fc":
        return {"_target_": "detector.modeling.roi_heads.FCBoxHead", "fc_dim": roi_heads["fc_dim"]}
    if kind == "conv4fc":
        return {"_target_": "detector.modeling.roi_heads.ConvFCBoxHead", "conv_dim": roi_heads["conv_dim"],
                "fc_dim": roi_heads["fc_dim"], "num_convs": 4, "norm": roi_heads.get("conv_norm", "")}
    raise ValueError(f"model.roi_heads.box_head='{kind}' in a stored config: expected fc or conv4fc.")


def _rename_moved_targets(node: dict) -> None:
    """MOVED_TARGETS applied to `node` and every node below it."""
    if node.get("_target_") in MOVED_TARGETS:
        node["_target_"] = MOVED_TARGETS[node["_target_"]]
    for value in node.values():
        if isinstance(value, dict):
            _rename_moved_targets(value)


def _fill_node_keys(model: dict) -> None:
    """NODE_KEYS_ADDED into each component node of `model` that lacks them."""
    for node in model.values():
        if isinstance(node, dict):
            for key, value in NODE_KEYS_ADDED.get(node.get("_target_"), {}).items():
                node.setdefault(key, value)


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` (a checkpoint's stored config) in today's layout; configs that are
    already current come back unchanged."""
    config = copy.deepcopy(dict(config))
    backbone, model = config.get("backbone"), config.get("model")
    if isinstance(backbone, dict) and "_target_" not in backbone and "depth" in backbone:
        backbone["_target_"] = RESNET
        for key, value in BACKBONE_KEYS_ADDED.items():
            _set_missing(backbone, key, value)
    if not isinstance(model, dict):
        return config
    if "_target_" in model:
        _rename_moved_targets(model)
        _fill_node_keys(model)
        return config
    if model.get("name") == "resnet_classifier":
        model["_target_"] = CLASSIFIER
        for key, value in CLASSIFIER_KEYS_ADDED.items():
            _set_missing(model, key, value)
        return config
    if "roi_heads" in model and "rpn" in model:
        for key, value in DETECTION_KEYS_ADDED.items():
            _set_missing(model, key, value)
        model["roi_heads"]["box_head"] = _box_head_node(model["roi_heads"])
        for section, target in DETECTION_TARGETS.items():
            node = model if not section else model[section]
            node.setdefault("_target_", target)
    return config
