"""Loading state dicts with strict key checks and errors that say exactly what differs.

Layer 2 of detector.weights, beside the one reader (checkpoint_io.py), through which
`read_state_dict` reads its file."""
from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

from detector.weights.checkpoint_io import read_checkpoint

# BatchNorm's step counter: not a weight, absent from FrozenBatchNorm2d and Detectron2 files.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
MAX_KEYS_LISTED = 20


class WeightsMismatchError(ValueError):
    """A state dict whose keys or shapes do not match the model."""


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_LISTED])
    more = f" ... and {len(keys) - MAX_KEYS_LISTED} more" if len(keys) > MAX_KEYS_LISTED else ""
    return shown + more


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                           strip: tuple[str, ...] = (), set_aside: tuple[str, ...] = ()) -> None:
    """Load `state` into `module`; any missing or unexpected key, or shape mismatch, raises
    WeightsMismatchError naming them and `source`.

    `strip`: key prefixes removed first, in order, each when every key has it (a file saved with
    the part of a larger model it came from, e.g. "backbone.body."). `set_aside`: key prefixes
    whose tensors in the file are dropped, the module keeping its own (a classifier's fc head when
    only its body is loaded, stages a body does not build)."""
    for prefix in strip + ("module.",):   # "module.": saved from a DistributedDataParallel wrapper
        state = strip_prefix(state, prefix)
    if set_aside:
        state = {k: v for k, v in state.items() if not k.startswith(set_aside)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIXES)
               and not (set_aside and k.startswith(set_aside))]
    unexpected = [k for k in state if k not in expected and not k.endswith(OPTIONAL_SUFFIXES)]
    mismatched = [f"{k} (file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
                  for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
    if problems:
        raise WeightsMismatchError(
            f"Weights in '{source}' do not match the model: " + "; ".join(problems)
            + ". Check that the config (backbone, num_classes, head sizes) matches the one the weights were made with.")
    # Optional counters may be absent from the file, and set-aside keys are: fill them from the model itself.
    full = {k: state.get(k, v) for k, v in expected.items()}
    module.load_state_dict(full, strict=True)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, whole checkpoint) from a checkpoint of this project ({"model": ...}),
    a safetensors file, or a bare state dict (e.g. a torchvision download): read_checkpoint's
    `state` and `contents`."""
    record = read_checkpoint(path)
    return record.state, record.contents
