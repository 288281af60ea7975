"""`.safetensors` files: the tensors, plus the config, iteration and class ids as JSON metadata.

safetensors holds only tensors and a string-to-string header, so a file can be shared and
loaded without any pickling at all. safetensors itself checks the header, not the bytes of the
tensors, so the header also carries a sha256 of the tensors (names, dtypes, shapes and bytes),
verified on every load: a bit flipped on disk or in transfer is reported as damage instead of
loading wrong numbers. Files written before the checksum existed (no such key) still load.

A checkpoint dict of this project ({"model", "iteration", "config", "category_ids"}) maps to
one file: "model" to the tensors, the rest to the metadata; nothing else fits in one.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from detector.weights.formats.atomic_write import write_atomically
from detector.weights.formats.errors import CheckpointError

# Metadata key of the tensors' checksum (see tensors_sha256).
CHECKSUM_KEY = "tensors_sha256"
# The checkpoint entries a safetensors file holds besides the tensors ("model"), as JSON metadata.
JSON_KEYS = ("config", "category_ids")
KEYS = ("model", "iteration", *JSON_KEYS)


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


def export_safetensors(checkpoint: Mapping[str, Any], path: str | os.PathLike,
                       previous: str | os.PathLike | None = None) -> Path:
    """Write checkpoint["model"] to `path` atomically, with "iteration" (0 when absent),
    "config", "category_ids" and the tensors' checksum in the header. Entries a safetensors
    file cannot hold (an optimizer's state, say) are refused rather than dropped."""
    from safetensors.torch import save

    extra = sorted(set(checkpoint) - set(KEYS))
    if extra:
        raise CheckpointError(f"Cannot write '{path}' as safetensors: it holds only {', '.join(KEYS)}, and this "
                              f"checkpoint also has {extra}. Write it as .pth, or leave those entries out.")
    tensors = {k: v.detach().contiguous().cpu() for k, v in checkpoint["model"].items()}
    metadata = {"iteration": str(int(checkpoint.get("iteration") or 0)), CHECKSUM_KEY: tensors_sha256(tensors)}
    if checkpoint.get("config") is not None:
        metadata["config"] = json.dumps(checkpoint["config"])
    if checkpoint.get("category_ids") is not None:
        metadata["category_ids"] = json.dumps([int(i) for i in checkpoint["category_ids"]])
    data = save(tensors, metadata=metadata)
    return write_atomically(path, lambda handle: handle.write(data), previous)


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


def checkpoint_entries(metadata: Mapping[str, str], path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint entries the metadata records, decoded: "iteration" (an int), "config" and
    "category_ids" (JSON), each only where the file has it (bare weights saved by other tools
    record none). Raises CheckpointError for a value that does not decode."""
    entries: dict[str, Any] = {}
    if "iteration" in metadata:
        try:
            entries["iteration"] = int(metadata["iteration"])
        except ValueError:
            raise CheckpointError(f"Checkpoint '{path}' records iteration {metadata['iteration']!r} in its safetensors "
                                  "metadata, expected a whole number: the header was edited or damaged; write the file "
                                  "again (tools/convert_weights.py --output FILE.safetensors).") from None
    for key in JSON_KEYS:
        if key in metadata:
            try:
                entries[key] = json.loads(metadata[key])
            except json.JSONDecodeError as error:
                raise CheckpointError(f"Checkpoint '{path}': the '{key}' of its safetensors metadata is not valid "
                                      f"JSON ({error}): the header was edited or damaged; use another copy.") from None
    return entries


def read_safetensors_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict a `.pth` twin of the file would hold: "model" and the entries its
    metadata records (checkpoint_entries)."""
    tensors, metadata = read_safetensors(path, map_location)
    return {"model": tensors, **checkpoint_entries(metadata, path)}
