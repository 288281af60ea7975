"""Optimizers, with norm and bias parameters in their own weight-decay group."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

# Layers whose parameters are scale/shift of a normalisation: decaying them towards zero
# fights the normalisation itself, so they get `weight_decay_norm` instead.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def parameter_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float) -> list[dict]:
    """Two groups: ordinary weights with `weight_decay`; norm and bias parameters with
    `weight_decay_norm`. Frozen parameters are left out; shared ones appear once."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_TYPES)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if is_norm or name == "bias" or name.endswith(".bias") else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": weight_decay_norm})
    if not groups:
        raise ValueError("The model has no trainable parameters; check backbone.freeze_at and the weights loaded.")
    return groups


def scaled_lr(base_lr: float, batch_size: int, world_size: int, grad_accum_steps: int, reference_batch_size: int) -> float:
    """Linear scaling rule: the recipe's lr is for `reference_batch_size` images per step;
    a step here sees batch_size * world_size * grad_accum_steps images."""
    total = batch_size * world_size * grad_accum_steps
    return base_lr * total / reference_batch_size


def make_optimizer(
    name: str,
    groups: Iterable[dict],
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(list(groups), lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(list(groups), lr=lr, betas=tuple(betas))
    raise ValueError(f"solver.optimizer={name!r} is not supported; use 'sgd' or 'adamw'.")


def build_optimizer(cfg, model: nn.Module, world_size: int = 1) -> torch.optim.Optimizer:
    """The optimizer described by cfg.solver, at the linearly scaled learning rate."""
    s = cfg.solver
    lr = scaled_lr(
        float(s.base_lr),
        int(cfg.dataloader.batch_size),
        world_size,
        int(cfg.train.grad_accum_steps),
        int(s.reference_batch_size),
    )
    groups = parameter_groups(model, float(s.weight_decay), float(s.weight_decay_norm))
    return make_optimizer(str(s.optimizer), groups, lr, float(s.momentum), tuple(s.betas))
