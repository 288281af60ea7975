"""Which image goes into which batch, as a pure function of (seed, rank, world size, iteration).

The training stream is an endless sequence of seeded permutations of the dataset. Rank r
of W takes stream positions r, r + W, r + 2W, ... Each item is (dataset index, stream
position); the position seeds that sample's augmentation, so a sample looks the same
whichever worker loads it and after a resume.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def epoch_permutation(size: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    if not shuffle:
        return np.arange(size)
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, epoch]).permutation(size)  # seeds >= 0


class TrainingSampler:
    """Endless (index, position) pairs for one rank, starting at this rank's item `start`."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, start: int = 0):
        if size <= 0:
            from detector.data.coco_index import DatasetError

            raise DatasetError("the training set is empty: nothing to sample (see the dataset warnings above)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start * self.world_size + self.rank  # global stream position
        epoch = position // self.size
        order = epoch_permutation(self.size, self.seed, epoch, self.shuffle)
        while True:
            current = position // self.size
            if current != epoch:
                epoch = current
                order = epoch_permutation(self.size, self.seed, epoch, self.shuffle)
            yield int(order[position % self.size]), position
            position += self.world_size


class TrainBatchSampler:
    """Batches of `batch_size` (index, position) pairs, from iteration `start_iter` on.

    With `group_ids` (e.g. 0 for landscape, 1 for portrait images), each batch holds one
    group only, so padding wastes less. Grouping happens here, from the known image sizes,
    rather than after loading, so it does not depend on which worker finishes first.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_iter: int = 0, group_ids: Sequence[int] | None = None, shuffle: bool = True):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.start_iter, self.shuffle = rank, world_size, start_iter, shuffle
        self.group_ids = None if group_ids is None or len(set(group_ids)) <= 1 else list(group_ids)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.group_ids is None:
            # Without grouping, iteration k starts at this rank's item k * batch_size: jump there.
            stream = iter(TrainingSampler(self.size, self.seed, self.rank, self.world_size, self.shuffle,
                                          start=self.start_iter * self.batch_size))
            while True:
                yield [next(stream) for _ in range(self.batch_size)]
        # Grouped batches depend on everything before them, so replay from the start
        # (integers only, cheap) and emit from start_iter on.
        stream = iter(TrainingSampler(self.size, self.seed, self.rank, self.world_size, self.shuffle))
        buckets: dict[int, list[tuple[int, int]]] = {}
        iteration = 0
        for item in stream:
            bucket = buckets.setdefault(self.group_ids[item[0]], [])
            bucket.append(item)
            if len(bucket) == self.batch_size:
                buckets[self.group_ids[item[0]]] = []
                if iteration >= self.start_iter:
                    yield bucket
                iteration += 1


def inference_shard(size: int, rank: int = 0, world_size: int = 1) -> range:
    """Contiguous shard of range(size) for `rank`; shards cover every index exactly once."""
    per_rank, extra = divmod(size, world_size)
    begin = rank * per_rank + min(rank, extra)
    return range(begin, begin + per_rank + (1 if rank < extra else 0))


class InferenceBatchSampler:
    """Batches of dataset indices from this rank's shard, in order."""

    def __init__(self, size: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.indices = inference_shard(size, rank, world_size)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for begin in range(0, len(self.indices), self.batch_size):
            yield list(self.indices[begin:begin + self.batch_size])

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size
