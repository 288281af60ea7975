"""A user's own box head, outside the library: global-average-pooled RoI features through
one hidden layer. The contract: built with (in_channels, resolution) plus the keys of its
config node, exposes `out_dim`, and maps [R, C, S, S] pooled features to [R, out_dim]."""
import torch
from torch import nn


class PooledMLPHead(nn.Module):
    def __init__(self, in_channels: int, resolution: int, fc_dim: int, dropout: float = 0.0):
        super().__init__()
        self.resolution = resolution
        self.fc = nn.Linear(in_channels, fc_dim)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = fc_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.relu(self.fc(x.mean(dim=(2, 3)))))
