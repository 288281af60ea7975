"""What every run shares, whatever its task: the process's device and process group, the
output folder and logger (RunContext), seeding, and rank 0's weights on every rank."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn

from detector.engine.config_checks import check_output_dir
from detector.engine.launch import select_device
from detector.utils.distributed import adopt_slurm_environment, get_world_size, init_distributed, is_distributed
from detector.utils.logger import setup_logger


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


class RunContext:
    """Device, process group, output folder and logger of one run (every rank)."""

    def __init__(self, cfg: DictConfig):
        adopt_slurm_environment()  # srun tasks (SLURM, submitit) name their local rank like torchrun
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = select_device(str(cfg.train.device), local_rank)
        self.rank, self.world_size, _ = init_distributed(self.device.type, float(cfg.train.dist_timeout_s))
        self.output_dir = Path(str(cfg.output_dir)).absolute()
        if self.rank == 0:
            check_output_dir(self.output_dir)
        self.logger = setup_logger(self.output_dir, self.rank)
        if self.world_size > 1:
            self.logger.info("Process group: %d processes (%s), this is rank %d.", self.world_size,
                             dist.get_backend(), self.rank)
