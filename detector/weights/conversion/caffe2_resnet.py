"""MSRA ImageNet ResNets as Detectron and Detectron2 publish them (Caffe2 blob names, e.g.
`res2_0_branch2a_w`) -> this project's ResNet body (torchvision names, e.g. `layer1.0.conv1.weight`).

Detectron2's `ImageNetPretrained/MSRA/R-50.pkl` keeps BatchNorm's statistics; Detectron's
older copies fused them into a per-channel scale and shift (`_bn_s`, `_bn_b` only). Both
load: a fused norm gets mean 0 and variance 1 - eps, so a FrozenBatchNorm2d applies exactly
the published scale and shift.

These networks expect Detectron's input (BGR, 0..255 minus the mean, std 1) and stride in
the first 1x1 conv of a block; the converted config says so.
"""
from __future__ import annotations

import logging
import re
from typing import Mapping

import numpy as np
import torch

from detector.weights.conversion.detectron2_conversion import DETECTRON2_MODEL_SETTINGS
from detector.weights.conversion.resnet_layout import infer_resnet_config

logger = logging.getLogger(__name__)

# torchvision's FrozenBatchNorm2d, the norm these weights go into: y = (x - mean) / sqrt(var + eps) * w + b.
FROZEN_BN_EPS = 1e-5

_CONV = re.compile(r"^res(\d)_(\d+)_branch(1|2a|2b|2c)_w$")
_NORM = re.compile(r"^res(\d)_(\d+)_branch(1|2a|2b|2c)_bn_(\w+)$")
_STEM_NORM = re.compile(r"^res_conv1_bn_(\w+)$")
# Caffe2's names for a norm's four tensors, in both the fused and the unfused files.
_NORM_FIELDS = {"s": "weight", "gamma": "weight", "b": "bias", "beta": "bias",
                "rm": "running_mean", "running_mean": "running_mean", "riv": "running_var", "running_var": "running_var"}
_BRANCH = {"2a": "1", "2b": "2", "2c": "3"}


def caffe2_blobs(data: Mapping) -> Mapping | None:
    """The name -> array dict of a Caffe2 ImageNet file, or None when `data` is not one."""
    blobs = data.get("blobs", data.get("model", data)) if isinstance(data, Mapping) else None
    if isinstance(blobs, Mapping) and "conv1_w" in blobs and any(_CONV.match(str(k)) for k in blobs):
        return blobs
    return None


def _our_name(key: str) -> str | None:
    if key == "conv1_w":
        return "conv1.weight"
    if match := _STEM_NORM.match(key):
        field = _NORM_FIELDS.get(match.group(1))
        return f"bn1.{field}" if field else None
    if match := _CONV.match(key):
        stage, block, branch = match.groups()
        prefix = f"layer{int(stage) - 1}.{block}"
        return f"{prefix}.downsample.0.weight" if branch == "1" else f"{prefix}.conv{_BRANCH[branch]}.weight"
    if match := _NORM.match(key):
        stage, block, branch, suffix = match.groups()
        field = _NORM_FIELDS.get(suffix)
        if field is None:
            return None
        prefix = f"layer{int(stage) - 1}.{block}"
        return f"{prefix}.downsample.1.{field}" if branch == "1" else f"{prefix}.bn{_BRANCH[branch]}.{field}"
    return None


def convert_caffe2_resnet(blobs: Mapping):
    """Returns (body state dict, backbone fields, model fields). The classifier (fc1000/pred)
    and the solver's `_momentum` blobs are left out."""
    state, skipped = {}, []
    for key, value in blobs.items():
        name = _our_name(str(key))
        if name is None:
            skipped.append(str(key))
            continue
        state[name] = torch.from_numpy(np.ascontiguousarray(np.asarray(value, dtype=np.float32)))
    if skipped:
        logger.info("Left out %d blobs that are not part of the ResNet body (e.g. %s)", len(skipped), ", ".join(sorted(skipped)[:4]))
    # Fused norms: the identity statistics under which FrozenBatchNorm2d is exactly the scale and shift.
    for key in [k for k in state if k.endswith(".weight") and (".bn" in k or "bn1." in k or ".downsample.1." in k)]:
        prefix = key[: -len("weight")]
        channels = state[key].shape[0]
        state.setdefault(f"{prefix}running_mean", torch.zeros(channels))
        state.setdefault(f"{prefix}running_var", torch.full((channels,), 1.0 - FROZEN_BN_EPS))
    backbone = {**infer_resnet_config(state, ""), "norm": "frozen_bn", "freeze_at": 2, "stride_in_1x1": True}
    model = {"input": dict(DETECTRON2_MODEL_SETTINGS["input"])}
    return state, backbone, model
