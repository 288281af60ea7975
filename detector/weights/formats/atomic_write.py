"""Atomic, durable writes: the one way every weights file is written.

A crash or a kill never leaves a truncated file under the final name: the bytes go to a
temporary file in the same folder, are flushed and fsynced, then renamed over the target, and
the folder is fsynced so that the rename itself survives a power cut.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

# Unfinished writes are named `.<name>.<random>.tmp` next to their target (the training
# checkpointer removes those a kill left behind).
TMP_SUFFIX = ".tmp"


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None],
                     previous: str | os.PathLike | None = None) -> Path:
    """Write a file through `write(handle)` atomically (see the module docstring). With
    `previous`, an existing `path` is first moved there (a rename, after the new file is
    complete on disk), so the file before this one survives as a fallback."""
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
