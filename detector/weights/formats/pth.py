"""`.pth` / `.pt` files: torch.save's format, read without unpickling arbitrary objects.

Reads go through `torch.load(weights_only=True)`, which admits tensors and plain containers
only. A `.pth` file is a zip archive whose members carry CRC-32 checksums; torch.load does not
verify them, so reads check them first: a file damaged on disk or in transfer is reported as
damaged instead of loading wrong numbers. Legacy (non-zip) pickles have no checksums to check.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from detector.weights.formats.atomic_write import write_atomically
from detector.weights.formats.errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"   # torch.save's zip format


def verify_zip_checksums(path: str | os.PathLike) -> None:
    """Raise CheckpointError when a zip-format checkpoint is truncated or a member's bytes
    no longer match their CRC-32 (reads the whole file once; about 1 GB/s)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(f"Checkpoint '{path}' is damaged: its zip directory is missing or unreadable "
                              f"({error}); the file is probably truncated.") from None
    if bad_member is not None:
        raise CheckpointError(
            f"Checkpoint '{path}' is damaged: its record '{bad_member}' fails the CRC-32 check "
            "(the file changed after it was written: disk or transfer error).")


def read_pth(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict a `.pth` file holds, read weights-only after its checksums are verified.
    Raises CheckpointError for an empty, damaged or hostile file, or one that holds no dict."""
    path = Path(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not magic:
        raise CheckpointError(f"Checkpoint '{path}' is empty (0 bytes): it was truncated or never written.")
    if magic == ZIP_MAGIC:
        verify_zip_checksums(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        text = str(error)
        if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"Refusing to load '{path}': it contains Python objects other than tensors and "
                "plain containers, and loading them could run arbitrary code. Only weights-only "
                "checkpoints (or .safetensors) are accepted; re-save the state dict with torch.save."
            ) from None
        raise CheckpointError(
            f"Checkpoint '{path}' could not be read ({type(error).__name__}: {text.splitlines()[0] if text else ''}). "
            "It may be truncated or damaged."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"Checkpoint '{path}' holds a {type(obj).__name__}, expected a dict.")
    return obj


def write_pth(obj: dict[str, Any], path: str | os.PathLike, previous: str | os.PathLike | None = None) -> Path:
    """Write `obj` with torch.save, atomically (with `previous`: see write_atomically)."""
    return write_atomically(path, lambda handle: torch.save(obj, handle), previous)
