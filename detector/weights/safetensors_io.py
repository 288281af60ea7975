"""Checkpoints as .safetensors: the tensors, plus the config and iteration as JSON metadata.

safetensors holds only tensors and a string-to-string header, so a file can be shared and
loaded without any pickling at all. Files are written like every checkpoint of this project
(atomically, fsynced: checkpoint_io.write_atomically). safetensors itself checks the header,
not the bytes of the tensors, so the header also carries a sha256 of the tensors (names,
dtypes, shapes and bytes), verified on every load: a bit flipped on disk or in transfer is
reported as damage instead of loading wrong numbers. Files written before the checksum
existed (no such key) still load.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import torch

from detector.weights.checkpoint_io import CheckpointError, load_checkpoint, write_atomically

# Metadata key of the tensors' checksum (see tensors_sha256).
CHECKSUM_KEY = "tensors_sha256"


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor, in name order: its name, dtype, shape and raw bytes (CPU
    tensors). Independent of where the tensors sit in the file."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous()
        digest.update(f"{len(name)}:{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Raw bytes of any dtype (bfloat16 and bool included) through a uint8 view.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def export_safetensors(checkpoint: dict, path: str | os.PathLike) -> Path:
    """Write checkpoint["model"] to `path` atomically, with "config", "iteration",
    "category_ids" and the tensors' checksum in the header."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in checkpoint["model"].items()}
    metadata = {"iteration": str(int(checkpoint.get("iteration", 0))), CHECKSUM_KEY: tensors_sha256(tensors)}
    if checkpoint.get("config") is not None:
        metadata["config"] = json.dumps(checkpoint["config"])
    if checkpoint.get("category_ids") is not None:
        metadata["category_ids"] = json.dumps([int(i) for i in checkpoint["category_ids"]])
    data = save(tensors, metadata=metadata)
    return write_atomically(path, lambda handle: handle.write(data))


def read_safetensors(path: str | os.PathLike,
                     map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors file, its checksum verified when it has one.
    Raises CheckpointError for a file that is not safetensors or whose tensors changed."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises several types for bad headers
        raise CheckpointError(f"Checkpoint '{path}' is not a valid safetensors file: {error}") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensors_sha256(tensors) != expected:
        raise CheckpointError(
            f"Checkpoint '{path}' is damaged: its tensors (names, dtypes, shapes or bytes) no longer match the sha256 "
            "checksum stored when it was written (the file changed after it was written: disk or transfer error). "
            "Use another copy.")
    if torch.device(map_location).type != "cpu":
        tensors = {name: tensor.to(map_location) for name, tensor in tensors.items()}
    return tensors, metadata


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The header metadata of a .safetensors file alone (its tensors are not read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises several types for bad headers
        raise CheckpointError(f"Checkpoint '{path}' is not a valid safetensors file: {error}") from None


def iteration_from_metadata(metadata: Mapping[str, str], path: str | os.PathLike) -> int | None:
    """The "iteration" export_safetensors records; None for a file that records none (bare
    weights saved by other tools)."""
    if "iteration" not in metadata:
        return None
    try:
        return int(metadata["iteration"])
    except ValueError:
        raise CheckpointError(f"Checkpoint '{path}' records iteration {metadata['iteration']!r} in its safetensors "
                              "metadata, expected a whole number: the header was edited or damaged; write the file "
                              "again (tools/convert_weights.py --output FILE.safetensors).") from None


def checkpoint_from_safetensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict a .pth of this project holds, from a .safetensors file: "model",
    and "iteration", "config" and "category_ids" where its metadata records them."""
    tensors, metadata = read_safetensors(path, map_location)
    checkpoint = {"model": tensors}
    iteration = iteration_from_metadata(metadata, path)
    if iteration is not None:
        checkpoint["iteration"] = iteration
    for key in ("config", "category_ids"):
        if key in metadata:
            try:
                checkpoint[key] = json.loads(metadata[key])
            except json.JSONDecodeError as error:
                raise CheckpointError(f"Checkpoint '{path}': the '{key}' of its safetensors metadata is not valid "
                                      f"JSON ({error}): the header was edited or damaged; use another copy.") from None
    return checkpoint


def read_checkpoint_with_config(path: str | os.PathLike) -> dict:
    """A checkpoint dict {"model", "config", "iteration"} from .pth or .safetensors (a
    .safetensors file that records no iteration reads as iteration 0)."""
    checkpoint = load_checkpoint(path)
    if Path(path).suffix == ".safetensors":
        checkpoint.setdefault("iteration", 0)
    return checkpoint
