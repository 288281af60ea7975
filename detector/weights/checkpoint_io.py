"""Layer 2 of detector.weights: the one reader and the one writer of checkpoint files.

Every checkpoint is read through `read_checkpoint(path)`, whatever its format, into one
`CheckpointRecord`: the state dict, the stored config (brought to today's layout by
config_upgrade), the iteration and the class ids, and the whole dict the file holds (a training
checkpoint's optimizer, scheduler and RNG states). The format is picked by the file's suffix:
`.safetensors` (detector/weights/formats/safetensors_file.py), anything else `.pth`
(formats/pth.py). A `.safetensors` file reads as the dict its `.pth` twin holds, so the two
formats never disagree: an iteration, a config or class ids are there when the file records
them and absent (None) when it does not. Every write goes through `save_checkpoint`, which
picks the format by the suffix the same way and writes atomically.

The views below (`load_checkpoint`, `checkpoint_iteration`) are this reader seen from the
callers that want a plain dict or just the iteration; detector/weights/state_dicts.py reads
through it too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from detector.weights.config_upgrade import upgrade_config
from detector.weights.formats.atomic_write import TMP_SUFFIX  # noqa: F401 - the checkpointer's name for leftovers
from detector.weights.formats.errors import CheckpointError
from detector.weights.formats.pth import read_pth, write_pth
from detector.weights.formats.safetensors_file import (
    checkpoint_entries,
    export_safetensors,
    read_safetensors_checkpoint,
    read_safetensors_metadata,
)

__all__ = ["CheckpointError", "CheckpointRecord", "read_checkpoint", "load_checkpoint", "checkpoint_iteration",
           "save_checkpoint", "is_safetensors"]


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether `path` is (to be) a safetensors file: the suffix decides, for reads and writes alike."""
    return Path(path).suffix == ".safetensors"


@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint file, read: `contents` is the dict it holds (for a .safetensors file, the
    dict its .pth twin would hold); the properties are what callers ask of it."""

    path: Path
    contents: dict[str, Any]

    @property
    def state(self) -> dict[str, torch.Tensor]:
        """The state dict: the "model" entry of a checkpoint of this project, or the whole file
        when it is a bare state dict (a torchvision download, say)."""
        state = self.contents.get("model", self.contents)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"'{self.path}' holds no state dict: expected a dict of tensors, or a checkpoint "
                                  "with one under 'model'.")
        return state

    @property
    def stored_config(self) -> dict | None:
        """The config the file carries, exactly as written (None when it carries none)."""
        config = self.contents.get("config")
        return config if isinstance(config, dict) else None

    @cached_property
    def config(self) -> dict | None:
        """The stored config brought to today's layout (detector/weights/config_upgrade.py);
        computed on first use, so reading a file never fails on its config alone."""
        return None if self.stored_config is None else upgrade_config(self.stored_config)

    @property
    def iteration(self) -> int | None:
        """The iteration the checkpoint was written at; None for bare weights, which record none."""
        iteration = self.contents.get("iteration")
        return None if iteration is None else int(iteration)

    @property
    def category_ids(self) -> list[int] | None:
        """label -> dataset category id (label 1 is the first entry), where the file records them."""
        ids = self.contents.get("category_ids")
        return None if ids is None else [int(i) for i in ids]


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist or is not a file.")
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> CheckpointRecord:
    """The one reader: any checkpoint file (.pth/.pt weights-only, or .safetensors) -> one
    record. Raises CheckpointError for a missing, damaged or hostile file."""
    path = _existing(path)
    if is_safetensors(path):
        return CheckpointRecord(path, read_safetensors_checkpoint(path, map_location))
    return CheckpointRecord(path, read_pth(path, map_location))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict a checkpoint holds (read_checkpoint(path).contents): for a training checkpoint,
    everything the checkpointer saved; for a `.safetensors` file, "model" and the "iteration",
    "config" and "category_ids" its metadata records."""
    return read_checkpoint(path, map_location).contents


def checkpoint_iteration(path: str | os.PathLike) -> int | None:
    """The iteration a checkpoint was written at (read_checkpoint(path).iteration); None for
    bare weights, which record none. Of a `.safetensors` file only the header is read, decoded
    as read_checkpoint decodes it."""
    path = _existing(path)
    if is_safetensors(path):
        return checkpoint_entries(read_safetensors_metadata(path), path).get("iteration")
    return read_checkpoint(path).iteration


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike, previous: str | os.PathLike | None = None) -> Path:
    """The one writer: `obj` to `path` atomically, as safetensors when the name ends in
    `.safetensors` (model, iteration, config and category ids only), else with torch.save.
    With `previous`, an existing `path` is first moved there, so the checkpoint before this one
    survives as a fallback should `path` ever be damaged later."""
    if is_safetensors(path):
        return export_safetensors(obj, path, previous)
    return write_pth(obj, path, previous)
