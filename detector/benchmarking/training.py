"""Training-step time and memory: forward, backward and an SGD step."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from detector.benchmarking.inference import autocast_for


def optimisation_step(model: nn.Module, device: torch.device, dtype: torch.dtype | None = None,
                      lr: float = 1e-4) -> Callable[[list, list], float]:
    """step(images, targets): one optimisation step, the way both codebases' loops do it."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)

    def step(images: list, targets: list) -> float:
        with autocast_for(device, dtype):
            losses = model(images, targets)
        total = sum(losses.values())
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(total.detach())
    return step


def training_step(model: nn.Module, images: list, targets: list, device: torch.device,
                  dtype: torch.dtype | None = None, lr: float = 1e-4) -> Callable[[int], float]:
    """A step on one fixed batch, in interleaved_times' calling convention."""
    step = optimisation_step(model, device, dtype, lr)
    return lambda _=0: step(images, targets)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    return {"params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
