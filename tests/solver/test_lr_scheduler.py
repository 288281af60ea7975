import math

import pytest
import torch

from detector.config import load_config
from detector.solver import WarmupLR, build_lr_scheduler, build_optimizer, scaled_lr


def _lrs(scheduler, optimizer, n):
    values = []
    for _ in range(n):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_linear_warmup_then_multistep():
    opt = _opt(0.1)
    sched = WarmupLR(opt, max_iter=20, decay="multistep", steps=[10, 15], gamma=0.1, warmup_iters=5, warmup_factor=0.001)
    lrs = _lrs(sched, opt, 20)
    # Warmup: factor 0.001 at 0, rising linearly to 1 at iteration 5.
    assert lrs[0] == pytest.approx(0.1 * 0.001)
    assert lrs[2] == pytest.approx(0.1 * (0.001 * 0.6 + 0.4))
    assert lrs[5:10] == pytest.approx([0.1] * 5)
    assert lrs[10:15] == pytest.approx([0.01] * 5)
    assert lrs[15:] == pytest.approx([0.001] * 5)


def test_cosine_goes_from_base_to_floor():
    opt = _opt(0.2)
    sched = WarmupLR(opt, max_iter=100, decay="cosine", warmup_iters=0, min_factor=0.05)
    lrs = _lrs(sched, opt, 101)
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[50] == pytest.approx(0.2 * (0.05 + 0.95 * 0.5))
    assert lrs[100] == pytest.approx(0.2 * 0.05)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert sched.lr_factor(25) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_scheduler_state_resumes_exactly():
    opt = _opt(0.1)
    sched = WarmupLR(opt, max_iter=30, decay="cosine", warmup_iters=10)
    straight = _lrs(sched, opt, 30)
    opt2 = _opt(0.1)
    first = WarmupLR(opt2, max_iter=30, decay="cosine", warmup_iters=10)
    _lrs(first, opt2, 12)
    opt3 = _opt(0.1)
    resumed = WarmupLR(opt3, max_iter=30, decay="cosine", warmup_iters=10)
    resumed.load_state_dict(first.state_dict())
    opt3.param_groups[0]["lr"] = opt2.param_groups[0]["lr"]
    assert _lrs(resumed, opt3, 18) == pytest.approx(straight[12:])


def test_batch_scaling_rule():
    assert scaled_lr(0.02, batch_size=2, world_size=8, grad_accum_steps=1, reference_batch_size=16) == pytest.approx(0.02)
    assert scaled_lr(0.02, batch_size=2, world_size=1, grad_accum_steps=1, reference_batch_size=16) == pytest.approx(0.0025)
    assert scaled_lr(0.02, batch_size=2, world_size=2, grad_accum_steps=4, reference_batch_size=16) == pytest.approx(0.02)


def test_build_from_config_1x_schedule():
    cfg = load_config(["schedule=1x", "dataset=shapes"])
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg, model, world_size=8)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)  # batch 2 x 8 GPUs = 16
    sched = build_lr_scheduler(cfg, opt)
    assert sched.lr_factor(59_999) == pytest.approx(1.0)
    assert sched.lr_factor(60_000) == pytest.approx(0.1)
    assert sched.lr_factor(80_000) == pytest.approx(0.01)
    assert cfg.train.max_iter == 90_000
    cfg3 = load_config(["schedule=3x"])
    assert (cfg3.train.max_iter, list(cfg3.solver.steps)) == (270_000, [210_000, 250_000])


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="solver.lr_scheduler"):
        WarmupLR(_opt(), max_iter=10, decay="linear")
    with pytest.raises(ValueError, match="train.max_iter"):
        WarmupLR(_opt(), max_iter=10, steps=[20])


def test_resume_with_a_longer_schedule_follows_the_new_one():
    opt = _opt(0.1)
    first = WarmupLR(opt, max_iter=10, decay="cosine")
    _lrs(first, opt, 5)
    opt2 = _opt(0.1)
    longer = WarmupLR(opt2, max_iter=100, decay="cosine")
    longer.load_state_dict(first.state_dict())
    assert longer.last_epoch == 5 and longer.max_iter == 100
    assert longer.lr_factor(longer.last_epoch) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 100)))
