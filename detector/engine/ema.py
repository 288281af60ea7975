"""Exponential moving average of a model's weights."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """Keeps `ema = decay_t * ema + (1 - decay_t) * model` after each optimizer step.

    `decay_t` ramps up from 0 towards `decay` over the first `ramp` updates or so
    (decay * (1 - exp(-updates / ramp))), so early, poor weights fade quickly. Buffers
    (BatchNorm statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp: float = 2000.0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema.decay must be in (0, 1), got {decay}.")
        if not ramp > 0.0:
            raise ValueError(f"train.ema.ramp must be > 0 (updates), got {ramp}.")
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = float(decay)
        self.ramp = float(ramp)
        self.updates = 0

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.ramp))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            new = source[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(new.to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(new)

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
