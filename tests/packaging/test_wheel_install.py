"""The package as a user installs it: a wheel built from the sources, installed (not editable)
into a folder of its own, run from a folder outside the checkout.

No network: the wheel is built with the setuptools already installed (--no-build-isolation)
and installed without its dependencies, which this environment has.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from reliability_helpers import TINY_MODEL

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "detector", "conf")
COMMANDS = ("detector-train", "detector-eval", "detector-predict", "detector-export", "detector-convert",
            "detector-check-dataset", "detector-analyze", "detector-train-cls")


def pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel from a copy of the sources (the checkout stays untouched), then
    `pip install --target` it; returns the wheel, the install folder and a folder elsewhere."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp / "dist"), str(src), cwd=tmp)
    wheel = next((tmp / "dist").glob("detector-*.whl"))
    site = tmp / "site"
    pip("install", "--no-deps", "--quiet", "--target", str(site), str(wheel), cwd=tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    # Only the installed copy: PYTHONPATH puts it ahead of the editable install of the checkout.
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return {"wheel": wheel, "site": site, "cwd": elsewhere, "env": env}


def run_elsewhere(installed: dict, cmd: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=installed["cwd"], env=installed["env"])
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_ships_every_config_file_and_command(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    shipped = sorted(n.removeprefix("detector/conf/") for n in names if n.endswith(".yaml"))
    assert shipped == sorted(str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml"))
    assert "detector/cli/train_net.py" in names and "detector/conf/__init__.py" in names
    for command in COMMANDS:
        assert (installed["site"] / "bin" / command).is_file(), command


def test_load_config_from_another_folder_uses_the_installed_copy(installed):
    code = ("import detector, detector.config as c; cfg = detector.load_config(['dataset=shapes']); "
            "print(detector.__file__); print(c.CONFIG_DIR); print(cfg.dataset.root); print(cfg.backbone.name)")
    lines = run_elsewhere(installed, [sys.executable, "-c", code]).stdout.splitlines()
    site, cwd = installed["site"].resolve(), installed["cwd"].resolve()
    assert Path(lines[0]).resolve().is_relative_to(site), lines[0]
    assert Path(lines[1]).resolve() == site / "detector" / "conf"
    # No repository when installed: relative dataset roots start at the working directory.
    assert Path(lines[2]) == cwd / ".cache" / "shapes"
    assert lines[3] == "resnet18_narrow"


def test_train_and_predict_commands_run_from_another_folder(installed):
    cwd = installed["cwd"]
    tiny = ["output_dir=run", "train.max_iter=3", "dataset.num_train=4", "dataset.num_test=2", "dataset.image_size=96",
            "dataset.object_size=[16,48]", "model.roi_heads.score_thresh=0.0", *TINY_MODEL]
    proc = run_elsewhere(installed, [str(installed["site"] / "bin" / "detector-train"), *tiny], timeout=300)
    run = cwd / "run"
    for name in ("config.yaml", "log.txt", "metrics.json", "checkpoints/model_final.pth",
                 "inference/coco_instances_results.json"):
        assert (run / name).is_file(), (name, proc.stdout[-2000:])
    assert json.loads((run / "metrics.json").read_text())["iteration"] == 3
    assert (cwd / ".cache" / "shapes" / "annotations" / "test.json").is_file()  # generated under the working folder
    assert str(REPO) not in (run / "config.yaml").read_text()  # nothing read from, or written to, the checkout

    images = cwd / ".cache" / "shapes" / "test"
    run_elsewhere(installed, [str(installed["site"] / "bin" / "detector-predict"), "--weights",
                              "run/checkpoints/model_final.pth", "--input", str(images), "--output", "pred"])
    predictions = json.loads((cwd / "pred" / "predictions.json").read_text())
    assert {p["file_name"] for p in predictions} <= {p.name for p in images.iterdir()}
    assert len(list((cwd / "pred").glob("*.png"))) == 2
