"""Reading and writing checkpoint files safely.

Writes are atomic (a temporary file in the same folder, fsync, then rename), so a crash
or a kill never leaves a truncated checkpoint behind. Reads never unpickle arbitrary
objects: `.pth` files go through `torch.load(weights_only=True)` and `.safetensors`
files through safetensors (detector/weights/safetensors_io.py, which checks their checksum). A `.pth` file is a zip archive whose members carry CRC-32
checksums; torch.load does not verify them, so reads check them first: a file damaged on
disk or in transfer is reported as damaged instead of loading wrong numbers.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, damaged or not allowed to be loaded."""


# Unfinished writes are named `.<name>.<random>.tmp` next to their target.
TMP_SUFFIX = ".tmp"


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


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None],
                     previous: str | os.PathLike | None = None) -> Path:
    """Write a file through `write(handle)` atomically: into a temporary file in the same
    folder, flushed and fsynced, then renamed over `path` (and the folder fsynced, so the
    rename itself survives a power cut). Every checkpoint format goes through here. With
    `previous`, an existing `path` is first moved there (a rename, after the new file is
    complete on disk), so the checkpoint before this one survives as a fallback."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None and path.is_file():
            os.replace(path, previous)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike, previous: str | os.PathLike | None = None) -> Path:
    """Write `obj` to `path` with torch.save, atomically (see write_atomically). With
    `previous`, an existing `path` is first moved there, so the checkpoint before this one
    survives as a fallback should `path` ever be damaged later."""
    return write_atomically(path, lambda handle: torch.save(obj, handle), previous)


def checkpoint_iteration(path: str | os.PathLike) -> int | None:
    """The iteration a checkpoint was written at; None for bare weights, which record none.
    Of a `.safetensors` file only the header is read (its metadata holds the iteration)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        iteration = load_checkpoint(path).get("iteration")
        return None if iteration is None else int(iteration)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist or is not a file.")
    from detector.weights.safetensors_io import iteration_from_metadata, read_safetensors_metadata

    return iteration_from_metadata(read_safetensors_metadata(path), path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a `.pth`/`.pt` (weights only) or `.safetensors` file into a dict: for a
    `.safetensors` file, the dict its `.pth` twin would hold ("model", and the "iteration",
    "config" and "category_ids" its metadata records)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist or is not a file.")
    if path.suffix == ".safetensors":
        from detector.weights.safetensors_io import checkpoint_from_safetensors

        return checkpoint_from_safetensors(path, map_location)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not magic:
        raise CheckpointError(f"Checkpoint '{path}' is empty (0 bytes): it was truncated or never written.")
    if magic == b"PK\x03\x04":  # torch.save's zip format; legacy pickles have no checksums
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
