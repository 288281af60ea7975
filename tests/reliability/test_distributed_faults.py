"""Distributed faults under torchrun with two CPU processes (gloo): a rank that raises, or a
rank killed with SIGKILL, makes the whole job exit non-zero within a bounded time, and the
last checkpoint stays good.

The raising rank comes from the test-only launcher train_net_faults.py (RAISE_AT=ITER:RANK),
so the library carries no fault-injection hook; the SIGKILL is a real kill of the rank's
process, found among torchrun's children by its RANK environment variable.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import FAULTS, REPO, TRAIN_NET, observe, tiny, tool_env, wait_for  # noqa: E402

BOUND_S = 120  # the whole job, start to exit, on a loaded 2-core machine
RUN = ["train.max_iter=40", "train.checkpoint_period=2", "train.dist_timeout_s=60"]


@pytest.fixture(scope="module")
def torchrun() -> list[str]:
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("torchrun is not installed next to this Python")
    return [found, "--nproc_per_node=2", "--max_restarts=0", "--monitor_interval=0.5"]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def rank_of(pid: int) -> int | None:
    try:
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def assert_last_checkpoint_good(out: Path) -> None:
    last = torch.load(out / "checkpoints" / "last.pth", weights_only=True)
    assert last["iteration"] >= 2 and last["iteration"] % 2 == 0
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (out / "checkpoints" / "model_final.pth").exists()


def test_a_rank_that_raises_stops_the_whole_job(torchrun, generated_shapes, tmp_path):
    out = tmp_path / "raise"
    start = time.monotonic()
    proc = subprocess.run(torchrun + [FAULTS] + tiny(generated_shapes, out, *RUN), capture_output=True, text=True,
                          timeout=BOUND_S, cwd=REPO, env=tool_env(RAISE_AT="5:1"))
    elapsed = time.monotonic() - start
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "injected fault: rank 1 fails at iteration 5" in text
    assert "iter: 5/40" not in text and "iter: 4/40" in text  # no rank went on past the failure
    assert elapsed < BOUND_S
    assert_last_checkpoint_good(out)
    observe("torchrun 2 CPU processes: rank 1 raises at iteration 5",
            "\n".join(line for line in text.splitlines() if "injected fault" in line or "ChildFailedError" in line
                      or "exitcode" in line)[:600] + f"\n(exit code {proc.returncode} after {elapsed:.0f} s)",
            "iterations after last.pth (iteration 4); resume works")


def test_a_rank_killed_with_sigkill_stops_the_whole_job(torchrun, generated_shapes, tmp_path):
    out = tmp_path / "sigkill"
    log = open(tmp_path / "torchrun.log", "w")
    start = time.monotonic()
    proc = subprocess.Popen(torchrun + [TRAIN_NET] + tiny(generated_shapes, out, *RUN), cwd=REPO, env=tool_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: (out / "log.txt").is_file() and "iter: 3/40" in (out / "log.txt").read_text(),
                 BOUND_S, "iteration 3", proc, poll=0.1)
        workers = {rank_of(pid): pid for pid in children(proc.pid)}
        assert set(workers) >= {0, 1}, workers
        os.kill(workers[1], signal.SIGKILL)
        killed_at = time.monotonic()
        code = proc.wait(timeout=BOUND_S)
        stopped_after = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = (tmp_path / "torchrun.log").read_text()
    assert code != 0, text[-3000:]
    assert "Signals.SIGKILL" in text or "SIGKILL" in text or "exitcode" in text, text[-3000:]
    assert stopped_after < BOUND_S and time.monotonic() - start < 2 * BOUND_S
    assert not any(Path(f"/proc/{pid}").exists() and rank_of(pid) is not None for pid in workers.values())
    assert "iter: 40/40" not in (out / "log.txt").read_text()
    assert_last_checkpoint_good(out)
    observe("torchrun 2 CPU processes: rank 1 killed with SIGKILL",
            "\n".join(line for line in text.splitlines() if "SIGKILL" in line or "ChildFailedError" in line
                      or "exitcode" in line)[:600] + f"\n(exit code {code}, {stopped_after:.1f} s after the kill)",
            "iterations after last.pth; resume works")
