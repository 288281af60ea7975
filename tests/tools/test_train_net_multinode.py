"""Two "nodes" on one machine: two launchers on loopback (gloo, CPU) train a few iterations
together. Once with torchrun --nnodes=2, once as two SLURM tasks (what srun starts for
hydra-submitit-launcher), where the ranks come from SLURM's variables alone."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from test_train_net import REPO, TRAIN_NET, tiny

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "GROUP_RANK", "TORCHELASTIC_RUN_ID")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS and not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _run_together(commands: list[tuple[list[str], dict[str, str]]], timeout: float = 300) -> list[tuple[int, str]]:
    """(exit code, output) of each command, all started at once. Outputs go to files, not pipes:
    a launcher blocked on a full pipe that nobody reads yet would stall its peers' collectives.
    A run past `timeout` fails with every launcher's output."""
    logs = [tempfile.TemporaryFile(mode="w+") for _ in commands]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
             for (cmd, env), log in zip(commands, logs)]

    def outputs() -> list[str]:
        texts = []
        for log in logs:
            log.seek(0)
            texts.append(log.read())
        return texts

    try:
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for other in procs:
                    other.kill()
                    other.wait()
                tails = "\n".join(f"--- launcher {i} ---\n{text[-3000:]}" for i, text in enumerate(outputs()))
                pytest.fail(f"the launchers did not finish within {timeout} s:\n{tails}")
        return [(proc.returncode, text) for proc, text in zip(procs, outputs())]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def _overrides(tmp_path: Path, num_test: int = 2, batch_size: int = 2, *extra: str) -> list[str]:
    return tiny(tmp_path / "shapes", tmp_path / "out", "train.max_iter=3", "train.checkpoint_period=3",
                "dataloader.num_workers=0", f"dataset.num_test={num_test}", f"dataloader.batch_size={batch_size}",
                "train.device=cpu", "solver.reference_batch_size=4", *extra)


def _check_outputs(tmp_path: Path, results: list[tuple[int, str]], total_batch: int = 4) -> None:
    for rank, (code, out) in enumerate(results):
        assert code == 0, f"node {rank} exited {code}:\n{out[-3000:]}"
    out = tmp_path / "out"
    final = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)
    assert final["iteration"] == 3
    log = (out / "log.txt").read_text()
    assert "Process group: 2 processes (gloo)" in log
    assert "Peak lr" in log and f"x total batch {total_batch} / 4" in log  # 2 processes x their batch
    assert len(list((out / "tb").iterdir())) == 1  # rank 0 alone wrote


def _validation_scalars(event_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"] if tag.startswith("val/")}


# Every anchor and every proposal enters the losses (no random subset): the validation loss of
# an image is then a function of the weights alone, whichever process computes it and in which
# order, so the two-process value can be compared with one process's.
ALL_SAMPLED = ["model.rpn.batch_size_per_image=1000000", "model.roi_heads.batch_size_per_image=1000000"]


def test_two_torchrun_nodes_on_loopback(tmp_path):
    """Also: the validation loss under DDP is the mean over all held-out images, the number one
    process gets on the same images with the same weights. 3 images on 2 ranks (2 + 1, batch
    1): an unweighted mean of the ranks' means, or rank 0's alone, would differ."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    port = free_port()
    overrides = _overrides(tmp_path, 3, 1, "train.val_loss_period=3", *ALL_SAMPLED)
    commands = [
        ([torchrun, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}", "--master_addr=127.0.0.1",
          f"--master_port={port}", "--max_restarts=0", TRAIN_NET, *overrides],
         _clean_env())
        for node in (0, 1)
    ]
    _check_outputs(tmp_path, _run_together(commands), total_batch=2)
    out = tmp_path / "out"
    assert "Validation loss at iteration 3: " in (out / "log.txt").read_text()
    ddp = {tag[len("val/"):]: values for tag, values in _validation_scalars(out / "tb").items()}
    assert set(ddp) >= {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "total_loss"}

    # One process, the final weights (those validated at iteration 3), the same held-out images.
    from detector.engine.precision import resolve_precision
    from detector.tasks.validation_loss import build_validation_set, compute_validation_loss
    from detector.weights.loading import load_model

    model = load_model(out / "checkpoints" / "model_final.pth")
    cfg, cpu = model.config, torch.device("cpu")
    precision = resolve_precision(cfg.train.amp, cpu)   # as the run computed it (the shapes recipe: bf16)
    held_out = build_validation_set(cfg)
    assert len(held_out) == 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the ranks ran (OMP_NUM_THREADS=1)
    try:
        single = compute_validation_loss(model, held_out, cpu, batch_size=1, precision=precision)
        shards = [compute_validation_loss(model, build_validation_set(cfg, rank, 2), cpu, batch_size=1,
                                          precision=precision)["total_loss"] for rank in (0, 1)]
    finally:
        torch.set_num_threads(threads)
    for name, values in ddp.items():
        assert [step for step, _ in values] == [3], name
        # The same number up to TensorBoard's float32 (measured: within 6e-8 relative).
        assert values[0][1] == pytest.approx(single[name], rel=1e-5), name
    # What a wrong reduction would have logged is far from it, so this check can fail: the
    # unweighted mean of the two ranks' means, or rank 0's own mean (measured: 0.5% and 0.9% off).
    for wrong in ((shards[0] + shards[1]) / 2, shards[0]):
        assert abs(wrong - single["total_loss"]) > 1e-3 * single["total_loss"]


def test_two_slurm_tasks_on_loopback(tmp_path):
    """No torchrun: each process finds its rank, the world and the rendezvous in SLURM's
    variables, as the tasks srun starts for a 2-node job do."""
    port = str(free_port())
    commands = [
        ([sys.executable, TRAIN_NET, *_overrides(tmp_path)],
         _clean_env(SLURM_PROCID=str(rank), SLURM_LOCALID="0", SLURM_NTASKS="2", SLURM_NNODES="2", SLURM_JOB_ID="77",
                    SLURM_JOB_NODELIST="127.0.0.1", MASTER_PORT=port))
        for rank in (0, 1)
    ]
    _check_outputs(tmp_path, _run_together(commands))
