"""Crash-safe training: SIGKILL at three points, a damaged last.pth, and the resumed run's
final weights equal to those of a run that was never interrupted.

The kills hit a real tools/train_net.py process: between two checkpoints, in the middle of
writing last.pth, and in the middle of writing model_final.pth (the last two through the
test-only launcher train_net_faults.py, which makes that one write stall halfway).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reliability_helpers import FAULTS, REPO, TRAIN_NET, observe, run_in_process, tiny, tool_env, wait_for
from detector.weights.checkpoint_io import CheckpointError, save_checkpoint
from detector.weights.checkpointer import LAST, PREVIOUS, Checkpointer, load_latest_good

MAX_ITER = 8
# fp32: the generated shapes' recipe trains in bf16, which has a test of its own below.
RUN = [f"train.max_iter={MAX_ITER}", "train.checkpoint_period=2", "train.amp=none"]


def start(script: str, args: list[str], log: Path, **env: str) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, script, *args], cwd=REPO, env=tool_env(**env), stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def iteration_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["iteration"]


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def leftovers(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


def resumed_in_process(args: list[str], run_dir: Path) -> str:
    """tools/train_net.py's run with `args`, in this process (no start of Python and torch; one
    thread, as the subprocesses): what it added to run_dir/log.txt."""
    log = run_dir / "log.txt"
    before = len(log.read_text()) if log.is_file() else 0
    run_in_process(args)
    return log.read_text()[before:]


def test_sigkill_at_three_points_then_resume_equals_uninterrupted_run(generated_shapes, tmp_path):
    shapes_root = generated_shapes
    # The uninterrupted reference; it runs alongside the first attempt of the killed run.
    straight_dir = tmp_path / "straight"
    straight = start(TRAIN_NET, tiny(shapes_root, straight_dir, *RUN), tmp_path / "straight.log")
    killed = tmp_path / "killed"
    checkpoints = killed / "checkpoints"
    args = tiny(shapes_root, killed, *RUN, "train.resume=true")
    log_txt = killed / "log.txt"

    # 1. Between two checkpoints: last.pth (iteration 2) is written, iteration 3 is running.
    proc = start(TRAIN_NET, args, tmp_path / "attempt1.log")
    wait_for(lambda: log_txt.is_file() and "iter: 3/8" in log_txt.read_text(), 240, "iteration 3", proc)
    kill(proc)
    first = iteration_of(checkpoints / LAST)
    assert first in (2, 4) and not (checkpoints / "model_final.pth").exists()
    assert straight.wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    reference = weights(straight_dir / "checkpoints" / "model_final.pth")

    # 2. In the middle of writing last.pth at iteration 6: half the bytes are in the temporary file.
    proc = start(FAULTS, args, tmp_path / "attempt2.log", SLOW_CHECKPOINT_WRITE="6:last.pth")
    wait_for(lambda: "SLOW_WRITE_IN_PROGRESS" in (tmp_path / "attempt2.log").read_text(), 240, "the slow write", proc)
    assert leftovers(checkpoints, LAST), "the interrupted write has no temporary file"
    kill(proc)
    assert iteration_of(checkpoints / LAST) == 4  # the complete previous checkpoint, untouched
    assert iteration_of(checkpoints / PREVIOUS) == 2  # (whether attempt 1 got to write iteration 4 or not)

    # 3. In the middle of writing model_final.pth (after last.pth at iteration 8).
    proc = start(FAULTS, args, tmp_path / "attempt3.log", SLOW_CHECKPOINT_WRITE="8:model_final.pth")
    wait_for(lambda: "SLOW_WRITE_IN_PROGRESS" in (tmp_path / "attempt3.log").read_text(), 240, "the slow write", proc)
    kill(proc)
    attempt2 = (tmp_path / "attempt2.log").read_text()
    observe("SIGKILL between two checkpoints (iteration 3), then train.resume=true",
            next(line for line in attempt2.splitlines() if "Resumed from" in line).split("] ")[-1],
            f"the iterations after last.pth (iteration {first}), retrained identically")
    attempt3 = (tmp_path / "attempt3.log").read_text()
    assert "Resumed from" in attempt3 and "at iteration 4" in attempt3
    observe("SIGKILL while last.pth (iteration 6) is half written, then resume",
            "\n".join(line.split("] ")[-1] for line in attempt3.splitlines() if "Removing" in line or "Resumed from" in line),
            "iterations 5-6 (retrained identically); last.pth and previous.pth untouched")
    assert "Removing" in attempt3 and ".last.pth." in attempt3  # attempt 2's half-written file
    assert iteration_of(checkpoints / LAST) == MAX_ITER
    assert not (checkpoints / "model_final.pth").exists() and leftovers(checkpoints, "model_final.pth")

    # Resume once more (in this process): nothing left to train, model_final.pth is written from last.pth.
    done = resumed_in_process(args, killed)
    assert "already at train.max_iter=8" in done
    observe("SIGKILL while model_final.pth is half written, then resume",
            "\n".join(line.split("] ")[-1] for line in done.splitlines()
                      if "Removing" in line or "already at" in line or "model_final.pth" in line),
            "nothing: model_final.pth is written from last.pth; final weights torch.equal the uninterrupted run's")
    assert not leftovers(checkpoints, LAST) and not leftovers(checkpoints, "model_final.pth")
    assert_same_weights(weights(checkpoints / "model_final.pth"), reference)
    assert (killed / "metrics.json").read_text() == (straight_dir / "metrics.json").read_text()

    # 4. last.pth truncated by hand (a full disk, a bad copy): the resume warns, names it,
    # falls back to previous.pth (iteration 6) and retrains to the very same weights.
    last = straight_dir / "checkpoints" / LAST
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    again = resumed_in_process(tiny(shapes_root, straight_dir, *RUN, "train.resume=true"), straight_dir)
    assert f"Cannot resume from {last}" in again and "truncated" in again
    assert f"Resuming from the previous good checkpoint {last.with_name(PREVIOUS)} (iteration 6)" in again
    assert (last.parent / "last.pth.damaged").is_file()
    observe("last.pth truncated by hand, then resume",
            "\n".join(line.split("] ")[-1] for line in again.splitlines() if "last.pth" in line and "WARNING" in line),
            "one checkpoint period (iterations 7-8 retrained); final weights equal the uninterrupted run's")  # kept for inspection, not rotated into previous.pth
    assert iteration_of(last) == MAX_ITER
    assert_same_weights(weights(straight_dir / "checkpoints" / "model_final.pth"), reference)


def max_difference(a, b, where: str = "") -> float:
    """The largest |a - b| over every tensor of two checkpoints (nested dicts and lists), after
    checking that both hold the same entries; an integer or other value that differs counts as inf."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, sorted(a), sorted(b) if isinstance(b, dict) else b)
        return max((max_difference(a[k], b[k], f"{where}/{k}") for k in a), default=0.0)
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        return max((max_difference(x, y, f"{where}/{i}") for i, (x, y) in enumerate(zip(a, b))), default=0.0)
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        if torch.equal(a, b):
            return 0.0
        if not a.is_floating_point():
            return float("inf")
        return float((a.double() - b.double()).abs().max())
    return 0.0 if a == b else float("inf")


# Options that keep state of their own, or draw on the random streams, across a resume, all in
# one run (each start of Python costs seconds): EMA (its averaged weights), bf16 autocast (fp32 where the CPU
# has no native bf16), gradient accumulation (two loader draws per step) and the validation loss (its own loader must
# leave the training stream untouched). Killed between two checkpoints and resumed, with exact
# equality on the CPU: a resume that drops any one of these states changes the final weights.
RESUME_OPTIONS = ["train.ema.enabled=true", "train.ema.decay=0.9", "train.amp=bf16", "train.grad_accum_steps=2",
                  "train.val_loss_period=3", "test.val_loss_max_images=2"]
SHORT_RUN = ["train.max_iter=6", "train.checkpoint_period=2", "test.analysis=false"]


def logged_losses(run_dir: Path) -> dict[str, str]:
    """Each logged iteration's loss line (losses smoothed over a window the checkpoint carries);
    where a resumed attempt logged an iteration again, its line wins."""
    lines = {}
    for line in (run_dir / "log.txt").read_text().splitlines():
        if "iter: " in line:
            text = line.split("iter: ")[1].split("  time:")[0]
            lines[text.split()[0]] = text
    return lines


def test_sigkill_then_resume_is_bit_identical_with_every_stateful_option(generated_shapes, tmp_path):
    """SIGKILL after the validation at iteration 3 (last.pth at iteration 2), resume, and the final
    checkpoint equals that of a run never interrupted: the weights and the EMA's averaged weights
    (model_final.pth holds the EMA as "model" and the trained weights as "model_raw"), every
    logged loss, the metrics and the validation loss."""
    options = [*SHORT_RUN, *RESUME_OPTIONS]
    straight_dir, killed = tmp_path / "straight", tmp_path / "killed"
    straight = start(TRAIN_NET, tiny(generated_shapes, straight_dir, *options), tmp_path / "straight.log")
    args = tiny(generated_shapes, killed, *options, "train.resume=true")
    log_txt = killed / "log.txt"
    # Kill after the validation at iteration 3, so the resumed run validates again on its way.
    marker = "Validation loss at iteration 3:"
    proc = start(TRAIN_NET, args, tmp_path / "attempt.log")
    wait_for(lambda: log_txt.is_file() and marker in log_txt.read_text(), 240, marker, proc)
    kill(proc)
    killed_at = iteration_of(killed / "checkpoints" / LAST)
    assert killed_at in (2, 4) and not (killed / "checkpoints" / "model_final.pth").exists()
    resumed = resumed_in_process(args, killed)   # in this process: a start of Python less
    assert f"at iteration {killed_at}." in resumed and "Resumed from" in resumed
    assert straight.wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    a = torch.load(straight_dir / "checkpoints" / "model_final.pth", weights_only=True)
    b = torch.load(killed / "checkpoints" / "model_final.pth", weights_only=True)
    assert {"model", "model_raw"} <= set(a), sorted(a)
    # the averaged weights are weights of their own, not a copy of the trained ones
    assert max_difference(a["model"], a["model_raw"]) > 0
    difference = max(max_difference(a[key], b[key], key) for key in ("model", "model_raw"))
    print(f"resume after SIGKILL (killed after iteration 3, resumed from {killed_at}): "
          f"max |weight difference| = {difference}")
    assert difference == 0.0
    assert (killed / "metrics.json").read_text() == (straight_dir / "metrics.json").read_text()
    straight_losses, killed_losses = logged_losses(straight_dir), logged_losses(killed)
    assert {f"{i}/6" for i in range(killed_at + 1, 7)} <= set(killed_losses) <= set(straight_losses)
    assert killed_losses == {key: straight_losses[key] for key in killed_losses}
    final = [line.split("] ", 1)[-1] for line in (straight_dir / "log.txt").read_text().splitlines()
             if "Validation loss at iteration 6:" in line]
    assert final and final[0] in log_txt.read_text()


# In-process checks of the fallback itself, one kind of damage each.

def _save(folder: Path, name: str, iteration: int, value: float = 1.0) -> Path:
    """As the Checkpointer writes last.pth: the old one becomes previous.pth."""
    return save_checkpoint({"model": {"w": torch.full((64, 64), value)}, "iteration": iteration}, folder / name,
                           previous=folder / PREVIOUS)


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated"),
    "zero_bytes": (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    "bit_flips": (_flip_bytes, "fails the CRC-32 check"),
    "nan_weights": (lambda p: save_checkpoint({"model": {"w": torch.full((64, 64), float("nan"))}, "iteration": 9}, p),
                    "holds NaN/inf"),
    "missing": (lambda p: p.unlink(), "is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_last_checkpoint_falls_back_to_previous_with_a_warning(damage, tmp_path, caplog):
    _save(tmp_path, LAST, 2, value=2.0)
    _save(tmp_path, LAST, 4, value=4.0)  # rotates iteration 2 into previous.pth
    assert iteration_of(tmp_path / PREVIOUS) == 2
    damage_fn, reason = DAMAGE[damage]
    damage_fn(tmp_path / LAST)
    with caplog.at_level(logging.WARNING, logger="detector"):
        path, checkpoint = load_latest_good(tmp_path, logging.getLogger("detector"))
    assert path == tmp_path / PREVIOUS and checkpoint["iteration"] == 2
    assert torch.equal(checkpoint["model"]["w"], torch.full((64, 64), 2.0))
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(tmp_path / LAST) in warnings and reason in warnings
    observe(f"last.pth damaged: {damage.replace('_', ' ')} (resume)",
            next(r.getMessage() for r in caplog.records if "Cannot resume" in r.getMessage()),
            "one checkpoint period: training goes on from previous.pth")
    # The next save must not rotate a damaged file into previous.pth.
    model = torch.nn.Linear(2, 2)
    Checkpointer(model, tmp_path).save(LAST, 6)
    assert iteration_of(tmp_path / PREVIOUS) == 2 or damage == "missing"


def test_every_checkpoint_damaged_is_an_error_not_a_silent_restart(tmp_path):
    _save(tmp_path, LAST, 2)
    _save(tmp_path, LAST, 4)
    for name in (LAST, PREVIOUS):
        (tmp_path / name).write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(CheckpointError) as error:
        load_latest_good(tmp_path, logging.getLogger("detector"))
    assert str(tmp_path / PREVIOUS) in str(error.value) and "No usable checkpoint" in str(error.value)
    observe("last.pth and previous.pth both damaged (resume)", str(error.value),
            "the run stops (exit 1) rather than silently starting over")
    assert load_latest_good(tmp_path / "empty") is None  # nothing there: a fresh start is right


def test_a_killed_write_never_touches_the_complete_checkpoints(tmp_path):
    """The write-then-rename order: killing the writer (here: the child process dies with
    SIGKILL half-way through torch.save) leaves last.pth and previous.pth as they were."""
    _save(tmp_path, LAST, 2, 2.0)
    _save(tmp_path, LAST, 4, 4.0)
    code = (
        "import os, signal, torch, sys\n"
        "from detector.weights.checkpoint_io import save_checkpoint\n"
        "real = torch.save\n"
        "def dying(obj, f, *a, **k):\n"
        "    f.write(b'half a checkpoint'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = dying\n"
        f"save_checkpoint({{'model': {{'w': torch.zeros(3)}}, 'iteration': 6}}, {str(tmp_path / LAST)!r}, "
        f"previous={str(tmp_path / PREVIOUS)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=tool_env(), timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert iteration_of(tmp_path / LAST) == 4 and iteration_of(tmp_path / PREVIOUS) == 2
    assert leftovers(tmp_path, LAST)
    load_latest_good(tmp_path)  # tidies up the leftover
    assert not leftovers(tmp_path, LAST)
