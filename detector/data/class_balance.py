"""Countering class imbalance in image classification, either by sampling
(`data.balance=sampling`: ClassBalancedBatchSampler) or by weighting the loss
(`data.balance=loss`: class_loss_weights).

Both are functions of the class counts and a strength in [0, 1] (0: the data's own
frequencies, 1: every class alike), and the sampler, like every training sampler here, is a
pure function of (seed, stream position), so a resume continues the same stream.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

BALANCE_CHOICES = ("none", "sampling", "loss")


def class_sampling_probabilities(counts: Sequence[int], strength: float) -> np.ndarray:
    """P(class) proportional to count^(1 - strength): strength 0 keeps the data's own
    frequencies, 1 makes every class equally likely, 0.5 is the square-root compromise.
    Classes without images get probability 0."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.where(counts > 0, np.power(np.maximum(counts, 1), 1.0 - float(strength)), 0.0)
    return weights / weights.sum()


def class_loss_weights(counts: Sequence[int], strength: float) -> np.ndarray:
    """Cross-entropy class weights proportional to count^(-strength), scaled so the
    average weight over the training samples is 1 (the loss keeps its usual size)."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.where(counts > 0, np.power(np.maximum(counts, 1), -float(strength)), 0.0)
    return weights * counts.sum() / (weights * counts).sum()


class ClassBalancedBatchSampler:
    """Endless batches of (index, position) pairs where each position first draws a class
    (see class_sampling_probabilities), then an image of it, both from (seed, position).
    Rank r of W takes positions r, r + W, ... from iteration `start_iter` on, like
    samplers.TrainBatchSampler, so a resume continues the same stream."""

    def __init__(self, labels: Sequence[int], num_classes: int, batch_size: int, seed: int, strength: float = 1.0,
                 rank: int = 0, world_size: int = 1, start_iter: int = 0):
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            raise ValueError("the training set is empty: nothing to sample")
        self.members = [np.flatnonzero(labels == c) for c in range(num_classes)]
        self.probabilities = class_sampling_probabilities([len(m) for m in self.members], strength)
        self.batch_size, self.seed = int(batch_size), int(seed) & 0xFFFFFFFFFFFFFFFF  # numpy seeds >= 0
        self.rank, self.world_size, self.start_iter = int(rank), int(world_size), int(start_iter)

    def item(self, position: int) -> tuple[int, int]:
        rng = np.random.default_rng([self.seed, position])
        cls = int(rng.choice(len(self.members), p=self.probabilities))
        members = self.members[cls]
        return int(members[rng.integers(len(members))]), position

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        position = self.start_iter * self.batch_size * self.world_size + self.rank
        while True:
            batch = []
            for _ in range(self.batch_size):
                batch.append(self.item(position))
                position += self.world_size
            yield batch
