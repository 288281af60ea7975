"""Distributed faults under torchrun with two CPU processes (gloo): a rank that raises, or a
rank killed with SIGKILL, makes the whole job exit non-zero within a few seconds of the
collective timeout the test configures (train.dist_timeout_s), and the last checkpoint stays good.

The raising rank comes from the test-only launcher train_net_faults.py (RAISE_AT=ITER:RANK),
so the library carries no fault-injection hook; the SIGKILL is a real kill of the rank's
process, found among torchrun's children by its RANK environment variable.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reliability_helpers import FAULTS, REPO, TRAIN_NET, observe, tiny, tool_env, wait_for

# The collective timeout configured for these jobs. A failed rank must end the job within
# STOP_BOUND_S of the failure: at worst the surviving rank waits out one collective, then
# torchrun (watching every 0.5 s) tears the job down; "a few seconds" of margin for that.
DIST_TIMEOUT_S = 10
STOP_BOUND_S = DIST_TIMEOUT_S + 5
START_BOUND_S = 120  # start-up to the fault, on a loaded 2-core machine (not what is tested)
RUN = ["train.max_iter=40", "train.checkpoint_period=2", f"train.dist_timeout_s={DIST_TIMEOUT_S}"]


@pytest.fixture(scope="module")
def torchrun() -> list[str]:
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("torchrun is not installed next to this Python")
    return [found, "--standalone", "--nproc_per_node=2", "--max_restarts=0", "--monitor_interval=0.5"]


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


def root_cause(text: str) -> str:
    """The "Root Cause (first observed failure)" block of torchrun's ChildFailedError report."""
    assert "ChildFailedError" in text and "Root Cause (first observed failure):" in text, text[-3000:]
    return text.split("Root Cause (first observed failure):", 1)[1].split("=====", 1)[0]


def run_until_failure(cmd: list[str], env: dict, log_path: Path, failed) -> tuple[int, float, str, subprocess.Popen]:
    """Start the job; once failed(proc, log text) says the fault happened (it may do the fault
    itself, and returns a truthy value then), time how long the job takes to end.
    Returns (exit code, seconds from the fault to the end, torchrun's output, process)."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: failed(proc, log_path.read_text()), START_BOUND_S, "the fault", proc, poll=0.05)
        fault_at = time.monotonic()
        try:
            code = proc.wait(timeout=STOP_BOUND_S + 60)   # past the bound too, to report by how much
        except subprocess.TimeoutExpired:
            code = None
        stopped_after = time.monotonic() - fault_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    text = log_path.read_text()
    assert code is not None, f"the job was still running {stopped_after:.0f} s after the fault:\n{text[-3000:]}"
    return code, stopped_after, text, proc


def test_a_rank_that_raises_stops_the_whole_job(torchrun, generated_shapes, tmp_path):
    out = tmp_path / "raise"
    code, stopped_after, text, _ = run_until_failure(
        torchrun + [FAULTS] + tiny(generated_shapes, out, *RUN), tool_env(RAISE_AT="5:1"), tmp_path / "torchrun.log",
        lambda proc, log: "injected fault: rank 1 fails at iteration 5" in log)
    assert code == 1, text[-3000:]
    cause = root_cause(text)
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", cause), cause
    assert re.search(r"exitcode\s*:\s*1 \(pid", cause), cause
    log = (out / "log.txt").read_text()
    assert "iter: 5/40" not in log and "iter: 4/40" in log  # no rank went on past the failure
    assert stopped_after < STOP_BOUND_S, f"{stopped_after:.1f} s from the failure to the end of the job"
    assert_last_checkpoint_good(out)
    observe("torchrun 2 CPU processes: rank 1 raises at iteration 5",
            "\n".join(line for line in text.splitlines() if "injected fault" in line or "ChildFailedError" in line
                      or "exitcode" in line)[:600] + f"\n(exit code {code}, {stopped_after:.1f} s after the failure)",
            "iterations after last.pth (iteration 4); resume works")


def test_a_rank_killed_with_sigkill_stops_the_whole_job(torchrun, generated_shapes, tmp_path):
    out = tmp_path / "sigkill"
    workers: dict[int | None, int] = {}

    def kill_rank_1_after_iteration_3(proc, _log):
        if not ((out / "log.txt").is_file() and "iter: 3/40" in (out / "log.txt").read_text()):
            return False
        workers.update({rank_of(pid): pid for pid in children(proc.pid)})
        assert set(workers) >= {0, 1}, workers
        os.kill(workers[1], signal.SIGKILL)
        return True

    code, stopped_after, text, _ = run_until_failure(
        torchrun + [TRAIN_NET] + tiny(generated_shapes, out, *RUN), tool_env(), tmp_path / "torchrun.log",
        kill_rank_1_after_iteration_3)
    assert code == 1, text[-3000:]
    # The failure torchrun reports first is the killed rank, by its pid, and the signal.
    cause = root_cause(text)
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", cause), cause
    assert re.search(rf"exitcode\s*:\s*-9 \(pid: {workers[1]}\)", cause), cause
    assert f"Signal 9 (SIGKILL) received by PID {workers[1]}" in cause, cause
    assert stopped_after < STOP_BOUND_S, f"{stopped_after:.1f} s from the kill to the end of the job"
    assert not any(Path(f"/proc/{pid}").exists() and rank_of(pid) is not None for pid in workers.values())
    assert "iter: 40/40" not in (out / "log.txt").read_text()
    assert_last_checkpoint_good(out)
    observe("torchrun 2 CPU processes: rank 1 killed with SIGKILL",
            "\n".join(line for line in text.splitlines() if "SIGKILL" in line or "ChildFailedError" in line
                      or "exitcode" in line)[:600] + f"\n(exit code {code}, {stopped_after:.1f} s after the kill)",
            "iterations after last.pth; resume works")
