"""The package imports, and predicts, without the POSIX-only modules (resource, fcntl): on
Windows they do not exist. Run in a fresh interpreter where importing them fails and msvcrt
is a recording stand-in, as on Windows."""
from __future__ import annotations

import subprocess
import sys

WITHOUT_POSIX_MODULES = r"""
import sys, types
sys.modules["resource"] = None  # `import resource` now raises ImportError, as on Windows
sys.modules["fcntl"] = None
import subprocess  # before the stand-in below: the standard library takes msvcrt as a sign of Windows
import torch
calls = []
sys.modules["msvcrt"] = types.SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=lambda fd, mode, n: calls.append(mode))

import detector
import detector.cli.predict, detector.tasks.prediction, detector.data.shapes, detector.engine.writers
from detector.engine.writers import peak_memory_mb
from detector.utils.file_lock import exclusive_lock

assert peak_memory_mb(torch.device("cpu")) == 0.0
with open(sys.argv[1], "w") as handle, exclusive_lock(handle):
    assert calls == [2]
assert calls == [2, 0], calls
print("ok")
"""


def test_imports_and_locks_without_posix_only_modules(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_POSIX_MODULES, str(tmp_path / "x.lock")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_posix_lock_excludes_another_process(tmp_path):
    """The POSIX path: a second process cannot take the lock while this one holds it."""
    from detector.utils.file_lock import exclusive_lock

    path = tmp_path / "x.lock"
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'w')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('got')\n"
             "except BlockingIOError:\n    print('busy')\n")
    with open(path, "w") as handle, exclusive_lock(handle):
        held = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
    free = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
    assert (held.stdout.strip(), free.stdout.strip()) == ("busy", "got")
