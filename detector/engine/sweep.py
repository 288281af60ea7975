"""One job of a Hydra `-m` (multirun) sweep: its own output folder, the record of its
overrides, and the process group it passes on to the next job.

A single run writes into `output_dir` as configured (fixed, so every torchrun rank resolves
the same folder). Under `-m` every job would resolve that same folder, so each job gets the
folder Hydra made for it: `hydra.sweep.dir/hydra.sweep.subdir`, which conf/config.yaml and
conf/cls.yaml set to `${output_dir}/${hydra.job.num}`. Every torchrun rank runs the same
sweep, job by job in the same order, and that path holds no timestamp, so all ranks of a
job agree on it. The job's command-line overrides are kept there as overrides.yaml, the
record Hydra itself keeps in `.hydra/overrides.yaml` (which these configs turn off:
hydra.output_subdir is null).
"""
from __future__ import annotations

import atexit
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

OVERRIDES_YAML = "overrides.yaml"
_leave_at_exit = False  # release_process_group registered the group's end at exit
_last_job_finished = False  # the sweep's last job ended normally (the ranks can meet at exit)


def _hydra_job():
    """Hydra's config of the running job, or None outside a Hydra application."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def in_sweep() -> bool:
    """True inside one job of a `-m` (multirun) sweep."""
    from hydra.types import RunMode

    hydra_cfg = _hydra_job()
    return hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN


def use_job_output_dir(cfg: DictConfig) -> None:
    """Under `-m`, point cfg.output_dir at this job's own folder (Hydra's runtime.output_dir,
    already created by Hydra), so the config checks, the run context and every
    `${output_dir}` interpolation see it. Single runs keep cfg.output_dir unchanged."""
    if in_sweep():
        cfg.output_dir = str(_hydra_job().runtime.output_dir)


def write_overrides_record(output_dir: str | Path) -> Path | None:
    """output_dir/overrides.yaml: this sweep job's overrides, as a YAML list (as Hydra's own
    .hydra/overrides.yaml). Call on rank 0 only. Single runs write nothing (their overrides
    are in summary.md); returns the file written, else None."""
    from detector.engine.history import write_text_atomic

    if not in_sweep():
        return None
    overrides = [str(o) for o in _hydra_job().overrides.task]
    path = Path(output_dir) / OVERRIDES_YAML
    write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(overrides)))
    return path


def release_process_group(finished: bool) -> None:
    """End of a job (`finished`: it ended normally, on every rank). A single run leaves its
    process group now; a sweep keeps it for the next job and leaves it at exit: a group made
    again in the same process reuses the store keys of the first one (torch names the default
    group "0" each time), and its ranks can meet stale addresses and fail to connect."""
    global _leave_at_exit, _last_job_finished
    from detector.utils.distributed import destroy_distributed

    _last_job_finished = finished
    if not in_sweep():
        destroy_distributed(all_finished=finished)
    elif not _leave_at_exit:
        atexit.register(_leave_process_group_at_exit)
        _leave_at_exit = True


def _leave_process_group_at_exit() -> None:
    from detector.utils.distributed import destroy_distributed

    destroy_distributed(all_finished=_last_job_finished)
