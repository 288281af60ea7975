"""Hydra sweeps (`-m`) through the command line: every job writes into its own folder,
<output_dir>/<job number>, with its own metrics.json and overrides.yaml (the record of that
job's overrides), and nothing lands in the folder the jobs share."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LEARNING_RATES = ("0.0005", "0.001", "0.002")

# A detector small and short enough for three jobs in about half a minute on two busy cores:
# 4 training images of 128 px, 2 iterations, 2 test images.
TINY_DETECTION = [
    "dataset.num_train=4", "dataset.num_test=2", "dataset.image_size=128",
    "model.input.min_size_test=128", "model.input.max_size_test=128", "aug.min_size=[128]", "aug.max_size=128",
    "dataloader.batch_size=2", "dataloader.num_workers=0", "train.log_period=1", "train.vis_period_images=1",
    "solver.warmup_iters=1", "model.rpn.pre_nms_topk_train=50", "model.rpn.post_nms_topk_train=20",
    "model.rpn.pre_nms_topk_test=50", "model.rpn.post_nms_topk_test=20", "model.roi_heads.batch_size_per_image=16",
    "model.roi_heads.fc_dim=32", "model.fpn.out_channels=32",
]


def sweep(tool: str, args: list[str], cwd: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [*(launcher or [sys.executable]), str(REPO / "tools" / tool), "-m", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def check_job_folders(sweep_dir: Path, learning_rates: tuple[str, ...], max_iter: int) -> None:
    """One folder per job (0, 1, ...), each with its own results and the overrides of that job
    only; the shared folder holds the job folders and Hydra's multirun.yaml, nothing else."""
    jobs = [str(i) for i in range(len(learning_rates))]
    assert sorted(p.name for p in sweep_dir.iterdir()) == sorted([*jobs, "multirun.yaml"])
    for job, lr in zip(jobs, learning_rates):
        folder = sweep_dir / job
        assert {"config.yaml", "log.txt", "metrics.json", "overrides.yaml", "checkpoints"} <= {p.name for p in folder.iterdir()}
        overrides = yaml.safe_load((folder / "overrides.yaml").read_text())
        assert f"solver.base_lr={lr}" in overrides and f"train.max_iter={max_iter}" in overrides
        assert not [o for o in overrides if o.startswith("solver.base_lr=") and o != f"solver.base_lr={lr}"]
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["solver"]["base_lr"] == float(lr)
        assert Path(config["output_dir"]) == folder.resolve()  # the run itself saw its own folder
        assert json.loads((folder / "metrics.json").read_text())["iteration"] == max_iter


def test_detection_sweep_runs_each_job_in_its_own_folder(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = sweep("train_net.py", [f"solver.base_lr={','.join(LEARNING_RATES)}", "train.max_iter=2",
                                  f"output_dir={sweep_dir}", f"dataset.root={tmp_path / 'data' / 'shapes'}", *TINY_DETECTION],
                 cwd=tmp_path)
    assert "Launching 3 jobs" in proc.stdout
    check_job_folders(sweep_dir, LEARNING_RATES, max_iter=2)
    # Hydra itself wrote nothing into the working directory (no outputs/, multirun/ or .hydra/)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sweep"]


def test_classification_sweep_under_torchrun_gives_each_job_one_folder(tmp_path):
    """Two processes run the same two jobs: both ranks of a job name the same folder (a rank
    that named another would leave a folder of its own), the process group carries over from
    job to job, and rank 0 alone writes (one TensorBoard file per job)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    data = tmp_path / "data"
    for split, count in (("train", 4), ("test", 2)):  # two classes of plain colour patches
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 40, 200))):
            (data / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (24, 20), colour).save(data / split / name / f"{i}.png")
    sweep_dir = tmp_path / "sweep"
    sweep("train_cls.py", ["solver.base_lr=0.05,0.1", "train.max_iter=2", f"output_dir={sweep_dir}", f"data.root={data}",
                           "data.image_size=32", "dataloader.batch_size=2", "dataloader.num_workers=0",
                           "dataloader.test_batch_size=4", "solver.warmup_iters=1", "train.log_period=1"],
          cwd=tmp_path, launcher=[torchrun, "--standalone", "--nproc_per_node=2", "--max_restarts=0"])
    check_job_folders(sweep_dir, ("0.05", "0.1"), max_iter=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sweep"]
    for job in ("0", "1"):
        assert "Process group: 2 processes" in (sweep_dir / job / "log.txt").read_text()
        assert len(list((sweep_dir / job / "tb").iterdir())) == 1
