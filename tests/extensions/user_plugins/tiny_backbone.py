"""A user's own backbone, outside the library: a small plain CNN that returns named
multi-scale features. This is the whole contract build_model needs from a backbone:
`out_features` (names, fine to coarse), `out_channels` and `strides` (dicts by name), and a
forward returning an ordered dict of those features."""
from collections import OrderedDict

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, widths: list[int], norm: str = "bn"):
        super().__init__()
        layers, channels = [], 3
        # A stride-4 stem, then one stride-2 stage per width after the first.
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(widths[0], widths[0], 3, stride=2, padding=1), nn.ReLU())
        channels = widths[0]
        for width in widths[1:]:
            layers.append(nn.Sequential(nn.Conv2d(channels, width, 3, stride=2, padding=1),
                                        nn.BatchNorm2d(width) if norm == "bn" else nn.Identity(), nn.ReLU()))
            channels = width
        self.stages = nn.ModuleList(layers)
        self.out_features = [f"s{4 * 2**i}" for i in range(len(widths))]
        self.out_channels = dict(zip(self.out_features, widths))
        self.strides = {name: 4 * 2**i for i, name in enumerate(self.out_features)}

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.stem(x)
        outputs = OrderedDict([(self.out_features[0], x)])
        for name, stage in zip(self.out_features[1:], self.stages):
            x = stage(x)
            outputs[name] = x
        return outputs
