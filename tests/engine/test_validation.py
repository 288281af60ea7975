"""The engine's validation loss (detector/engine/validation.py) is the task's own training
step on held-out batches, in eval mode and without gradients: equal to that step's losses on
the same batch with the model in eval mode, image-weighted over uneven batches, and leaving
the model's modes, its BatchNorm statistics and the RNG as they were."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detector.engine.validation import images_in, validation_losses

CPU = torch.device("cpu")


def net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():   # running statistics far from any batch's own: a train-mode BatchNorm would show
        model[1].running_mean.fill_(3.0)
        model[1].running_var.fill_(9.0)
    return model


def step(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """A training step: (model, batch) -> loss dict."""
    out = model(batch["images"])
    return {"loss_mse": nn.functional.mse_loss(out, batch["y"]), "loss_l1": nn.functional.l1_loss(out, batch["y"])}


def batch(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(n, 2, generator=g), "y": torch.randn(n, 1, generator=g)}


def in_eval_mode(model: nn.Module, one: dict) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        return {name: float(value) for name, value in step(model, one).items()}


def test_the_validation_loss_is_the_training_step_in_eval_mode():
    model = net()
    one = batch(4, 1)
    expected = in_eval_mode(model, one)
    model.train()
    losses = validation_losses(model, step, [one], CPU)
    assert set(losses) == {"loss_mse", "loss_l1", "total_loss"}
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value, rel=1e-6)
    assert losses["total_loss"] == pytest.approx(sum(expected.values()), rel=1e-6)


def test_uneven_batches_are_weighted_by_their_images():
    model = net()
    big, small = batch(3, 2), batch(1, 3)
    parts = [in_eval_mode(model, big), in_eval_mode(model, small)]
    model.train()
    losses = validation_losses(model, step, [big, small], CPU)
    for name in ("loss_mse", "loss_l1"):
        assert losses[name] == pytest.approx((3 * parts[0][name] + parts[1][name]) / 4, rel=1e-6)


def test_the_model_its_statistics_and_the_random_streams_are_left_as_they_were():
    model = net()
    model.train()
    model[3].eval()   # a mixed state, to be restored as it was
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    validation_losses(model, step, [batch(4, 1), batch(2, 4)], CPU)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model[1].training and not model[3].training


def test_a_batch_weighs_its_images():
    assert images_in({"images": [torch.zeros(3, 4, 4)] * 5}) == 5
    assert images_in(torch.zeros(7, 3)) == 7
    assert images_in({"x": torch.zeros(2)}) == 1
