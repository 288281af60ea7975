"""Process-group helpers that work the same with and without torch.distributed.

Everything here degrades to single-process behaviour when no process group exists, so
library code can call `get_rank()` or `gather_to_main()` unconditionally.
"""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


# A rendezvous port per SLURM job, so that two jobs sharing a node do not collide.
SLURM_PORT_BASE, SLURM_PORT_RANGE = 15000, 20000


def first_hostname(nodelist: str) -> str:
    """The first host of a SLURM hostlist: "gpu[003-004,010],cpu1" -> "gpu003"."""
    nodelist = nodelist.strip()
    depth, end = 0, len(nodelist)
    for i, char in enumerate(nodelist):  # the first entry ends at a comma outside brackets
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            end = i
            break
    entry = nodelist[:end]
    if "[" not in entry:
        if not entry:
            raise ValueError(f"SLURM node list {nodelist!r} names no host.")
        return entry
    prefix, _, rest = entry.partition("[")
    ranges, _, suffix = rest.partition("]")
    first = ranges.split(",")[0].split("-")[0]  # "003-004" -> "003": zero padding as written
    return f"{prefix}{first}{suffix}"


def environment_from_slurm(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) for a process that srun started as one of several SLURM tasks (as
    hydra-submitit-launcher does); {} when torchrun's are already there or SLURM runs a
    single task. The first node of the job hosts the rendezvous; its port comes from
    MASTER_PORT when set, else from the job id."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return {}
    if "SLURM_PROCID" not in environ or int(environ.get("SLURM_NTASKS", "1")) <= 1:
        return {}
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not environ.get("MASTER_ADDR") and not nodelist:
        raise RuntimeError("SLURM task without SLURM_JOB_NODELIST: set MASTER_ADDR to the host of rank 0.")
    nodes = max(1, int(environ.get("SLURM_NNODES", environ.get("SLURM_JOB_NUM_NODES", "1"))))
    ntasks = int(environ["SLURM_NTASKS"])
    job_id = int(environ.get("SLURM_JOB_ID", "0"))
    return {
        "RANK": str(int(environ["SLURM_PROCID"])),
        "WORLD_SIZE": str(ntasks),
        "LOCAL_RANK": str(int(environ.get("SLURM_LOCALID", "0"))),
        "LOCAL_WORLD_SIZE": str(ntasks // nodes),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or first_hostname(nodelist),
        "MASTER_PORT": environ.get("MASTER_PORT") or str(SLURM_PORT_BASE + job_id % SLURM_PORT_RANGE),
    }


def adopt_slurm_environment() -> bool:
    """Outside torchrun, under srun with several tasks: set torchrun's variables from
    SLURM's (see environment_from_slurm), so the rest of the code sees one convention.
    Call it before reading RANK or LOCAL_RANK; idempotent. True when it set them."""
    values = environment_from_slurm(os.environ)
    os.environ.update(values)
    return bool(values)


def init_distributed(device_type: str, timeout_s: float = 600.0) -> tuple[int, int, int]:
    """Join the process group described by torchrun's environment variables (or by SLURM's,
    for processes started by srun: see adopt_slurm_environment).

    Returns (rank, world_size, local_rank); (0, 1, 0) outside torchrun and SLURM. The timeout bounds
    every collective, so a rank that dies or stalls turns into an error on the others
    instead of an endless wait (torchrun then stops the job with a non-zero exit).
    """
    adopt_slurm_environment()
    if not launched_by_torchrun():
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not is_distributed():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        kwargs = {}
        if backend == "nccl":
            kwargs["device_id"] = torch.device("cuda", local_rank)
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            **kwargs,
        )
    return rank, world_size, local_rank


def destroy_distributed(all_finished: bool = False) -> None:
    """Leave the process group. `all_finished`: every rank reaches this point after the same
    work (a run that ended normally), so they first meet at a barrier. Rank 0 hosts the
    rendezvous store; a rank still shutting down its gloo connections after rank 0 has gone can
    be aborted ("terminate called without an active exception") and fail a finished job. After
    an error no barrier: the other ranks may be elsewhere, or gone."""
    if is_distributed():
        if all_finished:
            barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed() and get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0; None on the other ranks."""
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    gathered: list[Any] | None = [None] * get_world_size() if is_main_process() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not is_distributed() or get_world_size() == 1:
        return obj
    holder = [obj if is_main_process() else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar values over ranks (for logging the same losses on every rank)."""
    if not is_distributed() or get_world_size() == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= get_world_size()
    return {k: float(v) for k, v in zip(keys, tensor.tolist())}
