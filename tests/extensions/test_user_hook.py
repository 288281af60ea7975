"""A user's own hook (user_plugins/iteration_log.py), listed in train.hooks by a config
file of tests/extensions/conf/ added with hydra.searchpath, runs inside tools/train_net.py:
at every iteration, after that iteration's evaluation and before the writers."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_net import REPO, TRAIN_NET, tiny

PLUGINS_ROOT = Path(__file__).resolve().parent   # holds the user_plugins package


def train_net(args: list[str]) -> subprocess.CompletedProcess:
    # The user's module is importable by the run as it would be for a user: on PYTHONPATH.
    path = os.pathsep.join(p for p in (str(PLUGINS_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, TRAIN_NET, *args], capture_output=True, text=True, timeout=240, env=env,
                          cwd=REPO)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_user_hook_runs_every_iteration_after_the_evaluation(searchpath, tmp_path):
    out = tmp_path / "out"
    train_net(tiny(tmp_path / "shapes", out, searchpath, "+hooks=iteration_log", "train.max_iter=4",
                   "train.eval_period=2", "train.checkpoint_period=4", "train.vis_period_images=0"))
    seen = json.loads((out / "iterations_seen.json").read_text())
    assert [entry["iteration"] for entry in seen] == [1, 2, 3, 4]
    # It runs after the evaluation: at 2 and 4 it already sees that iteration's AP.
    assert seen[0]["bbox/AP"] is None
    assert seen[1]["bbox/AP"][1] == 2 and seen[2]["bbox/AP"][1] == 2 and seen[3]["bbox/AP"][1] == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = {r["iteration"]: r["bbox"]["AP"] for r in records if r["type"] == "eval"}
    assert {2: seen[1]["bbox/AP"][0], 4: seen[3]["bbox/AP"][0]} == pytest.approx(evals)
    # And before the writers: what it stores is in metrics.jsonl at the iteration it belongs to.
    user = [(r["iteration"], r["user"]["iterations_seen"]) for r in records if r["type"] == "user"]
    assert user == [(2, 2), (4, 4)]
    config = (out / "config.yaml").read_text()
    assert "user_plugins.iteration_log.IterationLog" in config


def test_a_hook_entry_that_is_not_a_hook_is_named(searchpath, tmp_path):
    from omegaconf import OmegaConf

    from detector.config import load_config
    from detector.engine.hooks import build_hooks

    cfg = load_config([searchpath, "+hooks=iteration_log", f"output_dir={tmp_path}"])
    hooks = build_hooks(cfg.train.hooks)
    assert type(hooks[0]).__name__ == "IterationLog" and hooks[0].path == Path(tmp_path) / "iterations_seen.json"
    cfg.train.hooks = OmegaConf.create([{"_target_": "collections.OrderedDict"}])
    with pytest.raises(TypeError, match=r"train\.hooks\[0\]: collections\.OrderedDict is not a hook"):
        build_hooks(cfg.train.hooks)


def test_a_hook_that_does_not_import_is_named(searchpath):
    from omegaconf import OmegaConf

    from detector.config import load_config
    from detector.engine.hooks import build_hooks

    cfg = load_config([searchpath, "+hooks=iteration_log"])
    cfg.train.hooks = OmegaConf.create([{"_target_": "user_plugins.iteration_log.NoSuchHook"}])
    with pytest.raises(ValueError, match=r"train\.hooks\[0\]\._target_=user_plugins\.iteration_log\.NoSuchHook: cannot import"):
        build_hooks(cfg.train.hooks)
