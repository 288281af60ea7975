"""SLURM tasks get torchrun's variables; the SLURM launcher config composes."""
from __future__ import annotations

import os

import pytest

from detector.utils.distributed import (SLURM_PORT_BASE, adopt_slurm_environment, environment_from_slurm,
                                        first_hostname)


@pytest.mark.parametrize("nodelist, first", [
    ("node7", "node7"),
    ("gpu[003-004,010],cpu1", "gpu003"),
    ("gpu-a[12,3]", "gpu-a12"),
    ("a1,b[1-2]", "a1"),
    ("rack[2-3]-ib", "rack2-ib"),
])
def test_first_hostname_of_a_slurm_hostlist(nodelist, first):
    assert first_hostname(nodelist) == first


def _srun_task(procid: int, localid: int, **extra: str) -> dict[str, str]:
    """What srun sets for one task of 2 nodes x 4 tasks (among many other variables)."""
    return {"SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid), "SLURM_NTASKS": "8", "SLURM_NNODES": "2",
            "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "dgx[017-018]", "PATH": "/usr/bin", **extra}


def test_srun_task_becomes_a_torchrun_rank():
    env = environment_from_slurm(_srun_task(5, 1))
    assert env == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                   "MASTER_ADDR": "dgx017", "MASTER_PORT": str(SLURM_PORT_BASE + 123456 % 20000)}
    # Every task of the job agrees on the rendezvous.
    assert {environment_from_slurm(_srun_task(r, r % 4))["MASTER_ADDR"] for r in range(8)} == {"dgx017"}
    # The step's node list (srun inside a bigger allocation) wins; given MASTER_* are kept.
    step = environment_from_slurm(_srun_task(0, 0, SLURM_STEP_NODELIST="dgx[020-021]", MASTER_PORT="29400"))
    assert step["MASTER_ADDR"] == "dgx020" and step["MASTER_PORT"] == "29400"


def test_torchrun_and_single_tasks_are_left_alone():
    assert environment_from_slurm(_srun_task(1, 1, RANK="3", WORLD_SIZE="16")) == {}  # torchrun inside sbatch
    assert environment_from_slurm({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "n1"}) == {}
    assert environment_from_slurm({"PATH": "/usr/bin"}) == {}
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        environment_from_slurm({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})


def test_adopt_sets_the_process_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # recorded, so what adopt sets is undone after the test
        monkeypatch.delenv(name)
    for name, value in _srun_task(6, 2).items():
        monkeypatch.setenv(name, value)
    assert adopt_slurm_environment()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("6", "8", "2")
    assert not adopt_slurm_environment()  # idempotent: torchrun's variables now exist


def _launcher_config(*overrides: str):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from detector.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)


def test_slurm_launcher_config_composes():
    cfg = _launcher_config("hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu", "dataset=bccd")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.nodes == 2 and launcher.gpus_per_node == 4
    assert launcher.tasks_per_node == 4  # one process per GPU follows gpus_per_node
    assert launcher.partition == "gpu" and launcher.timeout_min == 4320 and launcher.max_num_timeout == 0
    assert cfg.dataset.name == "bccd"  # the run's own config is untouched


def test_slurm_launcher_writes_a_multi_node_sbatch_script(tmp_path, monkeypatch):
    """The plugin's own path from config to sbatch file (no cluster here: srun detection is
    bypassed); the script asks for the nodes, one task per GPU, and runs them with srun."""
    cfg = _launcher_config("hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}")
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=10", "#SBATCH --partition=gpu", "#SBATCH --time=4320"):
        assert line in script
    assert "srun" in script
