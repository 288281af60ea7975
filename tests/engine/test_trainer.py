"""The training loop on a tiny regression model and a synthetic, iteration-indexed loader."""
import math

import pytest
import torch
from torch import nn

from detector.weights.checkpoint_io import load_checkpoint
from detector.engine import (
    LAST,
    Checkpointer,
    HookBase,
    LRSchedulerHook,
    ModelEMA,
    NonFiniteLossError,
    PeriodicCheckpointer,
    Trainer,
)
from detector.solver import WarmupLR


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))


def step(model, batch):
    x, y = batch["x"], batch["y"]
    pred = model.net(x)
    return {"loss_mse": ((pred - y) ** 2).mean(), "loss_l1": (pred - y).abs().mean() * 0.1}


class Loader:
    """Batches that depend only on the iteration, like the real train loader."""

    def __init__(self, batch_size=8, start_iter=0, poison_at=None):
        self.batch_size, self.start_iter, self.poison_at = batch_size, start_iter, poison_at

    def __iter__(self):
        i = self.start_iter
        while True:
            g = torch.Generator().manual_seed(i)
            x = torch.randn(self.batch_size, 4, generator=g)
            y = x.sum(dim=1, keepdim=True) * 0.5
            if self.poison_at is not None and i == self.poison_at:
                y = y * float("nan")
            yield {"x": x, "y": y, "skipped": ["bad.jpg"] if i == 2 else []}
            i += 1


def make(tmp_path, max_iter=12, start_iter=0, resume=None, poison_at=None, accum=1, batch_size=8, ema=False, period=4):
    torch.manual_seed(0)
    model = Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = WarmupLR(opt, max_iter=max_iter, decay="cosine", warmup_iters=3)
    ema_model = ModelEMA(model, decay=0.9, ramp=1.0) if ema else None
    ckpt = Checkpointer(model, tmp_path, optimizer=opt, scheduler=sched, ema=ema_model, config={"seed": 1})
    trainer = Trainer(
        model, opt, Loader(batch_size, start_iter * accum, poison_at), max_iter, step_fn=step,
        start_iter=start_iter, grad_accum_steps=accum, ema=ema_model,
    )
    if resume is not None:
        state = ckpt.resume(resume)
        trainer.start_iter = trainer.iter = state["iteration"]
        trainer.data_loader = Loader(batch_size, state["iteration"] * accum, poison_at)
        trainer.pending_rng_state = state["rng"]
    trainer.register_hooks([LRSchedulerHook(opt, sched), PeriodicCheckpointer(ckpt, period)])
    return trainer


class Recorder(HookBase):
    def __init__(self):
        self.events = []

    def before_train(self):
        self.events.append("before_train")

    def after_step(self):
        self.events.append(("step", self.trainer.iter, self.trainer.storage.latest()["loss_mse"][0]))

    def after_train(self):
        self.events.append("after_train")


def test_loop_trains_and_calls_hooks(tmp_path):
    trainer = make(tmp_path, max_iter=30, period=10)
    recorder = Recorder()
    trainer.register_hooks([recorder])
    trainer.train()
    assert recorder.events[0] == "before_train" and recorder.events[-1] == "after_train"
    steps = [e for e in recorder.events if isinstance(e, tuple)]
    assert [s[1] for s in steps] == list(range(30))
    assert steps[-1][2] < steps[0][2] * 0.5  # it learned
    assert trainer.skipped_samples == ["bad.jpg"]
    assert trainer.storage.latest()["lr"][0] > 0
    final = load_checkpoint(tmp_path / "model_final.pth")
    assert final["iteration"] == 30 and final["config"] == {"seed": 1}
    assert set(final) >= {"model", "optimizer", "scheduler", "rng", "iteration", "config"}


def test_resume_gives_identical_weights(tmp_path):
    straight = make(tmp_path / "a", max_iter=12)
    straight.train()
    interrupted = make(tmp_path / "b", max_iter=12)
    interrupted.max_iter = 8  # stop after the checkpoint at 8 (the run "dies" there)
    interrupted.hooks[0].scheduler.max_iter = 12
    interrupted.train()
    state = load_checkpoint(tmp_path / "b" / LAST)
    assert state["iteration"] == 8
    resumed = make(tmp_path / "b", max_iter=12, resume=tmp_path / "b" / LAST)
    assert resumed.start_iter == 8
    resumed.train()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = make(tmp_path, max_iter=12, poison_at=6)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    message = str(info.value)
    # The poisoned batch is index 6, i.e. the 7th iteration as the log counts.
    assert "iteration 7" in message
    assert "loss_mse=nan" in message and "loss_l1=nan" in message
    last = load_checkpoint(tmp_path / LAST)
    assert last["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # no step taken
    assert not (tmp_path / "model_final.pth").exists()


def test_checkpointer_refuses_non_finite_weights(tmp_path):
    model = Regressor()
    ckpt = Checkpointer(model, tmp_path)
    ckpt.save(LAST, 3)
    with torch.no_grad():
        model.net[0].weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="net.0.weight"):
        ckpt.save(LAST, 4)
    assert load_checkpoint(tmp_path / LAST)["iteration"] == 3


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path):
    # Without dropout, two accumulated batches of 4 equal one batch of 8 of the same samples.
    def no_dropout(trainer):
        trainer.model.net[2].p = 0.0
        return trainer

    class Halves(Loader):
        def __iter__(self):
            for batch in Loader(8, self.start_iter // 2).__iter__():
                yield {"x": batch["x"][:4], "y": batch["y"][:4]}
                yield {"x": batch["x"][4:], "y": batch["y"][4:]}

    big = no_dropout(make(tmp_path / "a", max_iter=5))
    big.train()
    accum = no_dropout(make(tmp_path / "b", max_iter=5, accum=2, batch_size=4))
    accum.data_loader = Halves()
    accum.train()
    for a, b in zip(big.model.parameters(), accum.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ema_follows_the_weights(tmp_path):
    trainer = make(tmp_path, max_iter=10, ema=True)
    trainer.train()
    ema = trainer.ema
    assert ema.updates == 10
    model_w = trainer.model.net[0].weight
    ema_w = ema.module.net[0].weight
    assert not torch.equal(model_w, ema_w)
    final = load_checkpoint(tmp_path / "model_final.pth")
    assert torch.equal(final["model"]["net.0.weight"], ema_w)  # the final model is the EMA
    assert torch.equal(final["model_raw"]["net.0.weight"], model_w)


def test_ema_ramp_sets_how_fast_the_decay_reaches_its_value():
    from detector.engine.ema import ModelEMA

    model = nn.Linear(2, 1)
    short, long = ModelEMA(model, decay=0.99, ramp=10), ModelEMA(model, decay=0.99)
    for ema in (short, long):
        ema.updates = 10
    assert short.current_decay() == pytest.approx(0.99 * (1 - math.exp(-1)))
    assert long.current_decay() == pytest.approx(0.99 * (1 - math.exp(-10 / 2000)))
    # One update towards weights moved by 1: the short ramp keeps ~63% of the old average.
    with torch.no_grad():
        model.weight.add_(1.0)
    before = short.module.weight.clone()
    short.update(model)
    moved = (short.module.weight - before) / 1.0
    assert torch.allclose(moved, torch.full_like(moved, 1 - 0.99 * (1 - math.exp(-11 / 10))))
    with pytest.raises(ValueError, match="train.ema.ramp"):
        ModelEMA(model, decay=0.99, ramp=0)


def test_clip_grad_norm_is_recorded(tmp_path):
    trainer = make(tmp_path, max_iter=3)
    trainer.clip_grad_norm = 1e-3
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert "grad_norm" in trainer.storage.latest()
    moved = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(trainer.model.parameters(), before)))
    assert moved < 3 * 0.05 * 1e-3 * 10  # tiny steps: the gradient was clipped


def test_cpu_bf16_autocast_runs_and_fp16_needs_cuda(tmp_path, monkeypatch):
    from detector.engine import precision as precision_module
    from detector.engine import resolve_precision

    # The trainer's bf16 autocast, whatever this CPU has (the fallback is tested below).
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)

    seen = []

    def recording_step(model, batch):
        out = step(model, batch)
        seen.append(model.net[0](batch["x"]).dtype)  # inside autocast: a bf16 matmul
        return out

    trainer = make(tmp_path, max_iter=3)
    trainer.precision = resolve_precision("bf16", torch.device("cpu"))
    trainer.step_fn = recording_step
    trainer.train()
    assert seen == [torch.bfloat16] * 3
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in trainer.model.parameters())
    assert resolve_precision("none", torch.device("cpu")).dtype is None
    with pytest.raises(ValueError, match="train.amp=fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


def test_cpu_bf16_without_native_bfloat16_falls_back_to_fp32_with_a_warning(monkeypatch, caplog):
    """On a CPU without AVX-512 BF16 or AMX, bf16 is emulated at several times fp32's time and
    oneDNN's fused bf16 kernels refuse to run: the run goes on in fp32 and says why."""
    import logging

    from detector.engine import precision as precision_module
    from detector.engine import resolve_precision

    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    logger = logging.getLogger("test_bf16_fallback")
    with caplog.at_level(logging.WARNING, logger="test_bf16_fallback"):
        precision = resolve_precision("bf16", torch.device("cpu"), logger)
    assert precision.dtype is None and not precision.use_scaler
    assert "no native bfloat16" in caplog.text and "fp32" in caplog.text
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("bf16", torch.device("cpu"), logger).dtype is torch.bfloat16
