"""What every run shares, whatever its task: the process's device and process group, the
output folder and logger (RunContext, the typed context the engine hands every Task method),
seeding, and rank 0's weights on every rank."""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn

from detector.engine.config_checks import check_output_dir
from detector.engine.devices import select_device
from detector.utils.distributed import adopt_slurm_environment, get_world_size, init_distributed, is_distributed
from detector.utils.logger import setup_logger

if TYPE_CHECKING:   # types only: the engine sits above weights/, which never imports it
    from detector.weights.starting_weights import StartingWeights


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sync_from_rank0(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank. Under DDP each rank's BatchNorm
    running statistics last saw its own batch; evaluating with rank 0's (those written to
    the checkpoint) makes distributed evaluation equal the checkpoint's evaluation."""
    if not is_distributed() or get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(model.state_dict().values()):
            dist.broadcast(tensor, src=0)


@dataclass
class RunContext:
    """Device, process group, output folder and logger of one run (every rank), and what the
    run decided before building its model: the checkpoint it resumes from and its starting
    weights, each read once. The engine makes it once per run (open_run_context) and passes it
    to every Task method, so a task never sets up processes, folders or logging itself."""

    device: torch.device
    rank: int
    world_size: int
    output_dir: Path
    logger: logging.Logger
    resume: tuple[Path, dict[str, Any]] | None = None   # (path, checkpoint) continued from; None: a fresh start
    starting_weights: StartingWeights | None = None       # the starting weights, resolved and read once

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files."""
        return self.rank == 0


def open_run_context(cfg: DictConfig) -> RunContext:
    """The run's context: output_dir checked (created and proven writable, on rank 0, before
    any process group is joined: a bad folder fails at once, not after the other ranks wait on
    it), the device, the process group, and the logger writing output_dir/log.txt."""
    adopt_slurm_environment()  # srun tasks (SLURM, submitit) name their ranks like torchrun
    output_dir = Path(str(cfg.output_dir)).absolute()
    if int(os.environ.get("RANK", 0)) == 0:
        check_output_dir(output_dir)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = select_device(str(cfg.train.device), local_rank)
    rank, world_size, _ = init_distributed(device.type, float(cfg.train.dist_timeout_s))
    logger = setup_logger(output_dir, rank)
    if world_size > 1:
        logger.info("Process group: %d processes (%s), this is rank %d.", world_size, dist.get_backend(), rank)
    return RunContext(device, rank, world_size, output_dir, logger)
