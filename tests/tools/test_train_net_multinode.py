"""Two "nodes" on one machine: two launchers on loopback (gloo, CPU) train a few iterations
together. Once with torchrun --nnodes=2, once as two SLURM tasks (what srun starts for
hydra-submitit-launcher), where the ranks come from SLURM's variables alone."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, env in commands]
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def _overrides(tmp_path: Path) -> list[str]:
    return tiny(tmp_path / "shapes", tmp_path / "out", "train.max_iter=3", "train.checkpoint_period=3",
                "dataloader.num_workers=0", "dataset.num_test=2", "train.device=cpu", "solver.reference_batch_size=4")


def _check_outputs(tmp_path: Path, results: list[tuple[int, str]]) -> None:
    for rank, (code, out) in enumerate(results):
        assert code == 0, f"node {rank} exited {code}:\n{out[-3000:]}"
    out = tmp_path / "out"
    final = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)
    assert final["iteration"] == 3
    log = (out / "log.txt").read_text()
    assert "Process group: 2 processes (gloo)" in log
    assert "Peak lr" in log and "x total batch 4 / 4" in log  # 2 processes x batch 2
    assert len(list((out / "tb").iterdir())) == 1  # rank 0 alone wrote


def test_two_torchrun_nodes_on_loopback(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    port = free_port()
    commands = [
        ([torchrun, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}", "--master_addr=127.0.0.1",
          f"--master_port={port}", "--max_restarts=0", TRAIN_NET, *_overrides(tmp_path), "train.val_loss_period=3"],
         _clean_env())
        for node in (0, 1)
    ]
    _check_outputs(tmp_path, _run_together(commands))
    # The validation loss under DDP: each rank one of the two test images, averaged.
    assert "Validation loss at iteration 3: " in (tmp_path / "out" / "log.txt").read_text()


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
