import random

import numpy as np
import pytest
import torch

from detector.weights.checkpoint_io import load_checkpoint, save_checkpoint
from detector.weights.checkpointer import LAST, Checkpointer
from detector.utils.rng_state import capture_rng_state, restore_rng_state


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / LAST
    save_checkpoint({"model": {"w": torch.ones(3)}, "iteration": 1}, path)

    def dying_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of torch.save

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "iteration": 2}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == [LAST]  # no temporary file left behind


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    save_checkpoint({"rng": state}, tmp_path / "rng.pth")
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    got = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_full_training_state_is_weights_only_loadable(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    from detector.engine import ModelEMA
    from detector.solver import WarmupLR

    sched = WarmupLR(opt, max_iter=10, warmup_iters=2)
    ckpt = Checkpointer(model, tmp_path, opt, sched, ema=ModelEMA(model), config={"a": {"b": [1, 2]}})
    ckpt.save(LAST, 5)
    state = torch.load(tmp_path / LAST, weights_only=True)
    assert {"model", "optimizer", "scheduler", "ema", "rng", "rng_per_rank", "iteration", "config"} <= set(state)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    Checkpointer(fresh, tmp_path, fresh_opt, WarmupLR(fresh_opt, max_iter=10, warmup_iters=2)).resume(tmp_path / LAST)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
