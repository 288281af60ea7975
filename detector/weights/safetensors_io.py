"""Checkpoints as .safetensors: the tensors, plus the config and iteration as JSON metadata.

safetensors holds only tensors and a string-to-string header, so a file can be shared and
loaded without any pickling at all.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from detector.weights.checkpoint_io import CheckpointError, load_checkpoint


def export_safetensors(checkpoint: dict, path: str | os.PathLike) -> Path:
    """Write checkpoint["model"] to `path`, with "config", "iteration" and "category_ids" in the header."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"iteration": str(int(checkpoint.get("iteration", 0)))}
    if checkpoint.get("config") is not None:
        metadata["config"] = json.dumps(checkpoint["config"])
    if checkpoint.get("category_ids") is not None:
        metadata["category_ids"] = json.dumps([int(i) for i in checkpoint["category_ids"]])
    tensors = {k: v.detach().contiguous().cpu() for k, v in checkpoint["model"].items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_checkpoint_with_config(path: str | os.PathLike) -> dict:
    """A checkpoint dict {"model", "config", "iteration"} from .pth or .safetensors."""
    checkpoint = load_checkpoint(path)
    if Path(path).suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception as error:
            raise CheckpointError(f"Cannot read the header of '{path}': {error}") from None
        if "config" in metadata:
            checkpoint["config"] = json.loads(metadata["config"])
        checkpoint["iteration"] = int(metadata.get("iteration", 0))
        if "category_ids" in metadata:
            checkpoint["category_ids"] = json.loads(metadata["category_ids"])
    return checkpoint
