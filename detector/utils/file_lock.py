"""An exclusive lock on an open file, held across processes (ranks, DataLoader workers).

fcntl exists only on POSIX systems and msvcrt only on Windows; importing this module works
on both, so the package imports (and predicts) on any OS.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import IO, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


@contextlib.contextmanager
def exclusive_lock(handle: IO) -> Iterator[None]:
    """Block until this process alone holds the lock on `handle`, release it on exit."""
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
        return
    fd = handle.fileno()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:  # msvcrt's blocking mode gives up after 10 s; a lock here may be held longer
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
