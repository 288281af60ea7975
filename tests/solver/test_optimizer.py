import pytest
import torch
from torch import nn

from detector.config import load_config
from detector.solver import build_optimizer, parameter_groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_norm_and_bias_get_their_own_decay():
    model = Tiny()
    decay, no_decay = parameter_groups(model, weight_decay=1e-4, weight_decay_norm=0.0)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(decay["params"]) == ids([model.conv.weight, model.fc.weight])
    assert ids(no_decay["params"]) == ids([model.bn.weight, model.bn.bias, model.gn.weight, model.gn.bias, model.fc.bias])


def test_weight_decay_really_spares_norm_params():
    model = Tiny()
    opt = torch.optim.SGD(parameter_groups(model, 0.5, 0.0), lr=1.0)
    before_bn, before_fc = model.bn.weight.detach().clone(), model.fc.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(model.bn.weight, before_bn)  # zero gradient and no decay: unchanged
    assert torch.allclose(model.fc.weight, before_fc * 0.5)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_from_config(name, cls):
    cfg = load_config([f"solver.optimizer={name}", "solver.base_lr=0.04", "solver.reference_batch_size=16", "dataloader.batch_size=4"])
    opt = build_optimizer(cfg, Tiny(), world_size=2)
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.04 * 8 / 16)
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.9


def test_unknown_optimizer():
    cfg = load_config(["solver.optimizer=lamb"])
    with pytest.raises(ValueError, match="solver.optimizer"):
        build_optimizer(cfg, Tiny())
