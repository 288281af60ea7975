"""Samplers: seeded, sharded across ranks, exactly resumable; inference visits each image once."""
import itertools

from detector.data.samplers import InferenceBatchSampler, TrainBatchSampler, TrainingSampler


def _take(iterable, n):
    return list(itertools.islice(iter(iterable), n))


def test_two_ranks_get_disjoint_shards_that_cover_the_data():
    size = 10
    rank0 = _take(TrainingSampler(size, seed=3, rank=0, world_size=2), 5)
    rank1 = _take(TrainingSampler(size, seed=3, rank=1, world_size=2), 5)
    first_epoch = [i for i, _ in rank0] + [i for i, _ in rank1]
    assert sorted(first_epoch) == list(range(size))  # one epoch between them, no overlap
    positions = {p for _, p in rank0} | {p for _, p in rank1}
    assert positions == set(range(size))  # every sample's augmentation seed is distinct
    assert _take(TrainingSampler(size, seed=4, rank=0, world_size=2), 5) != rank0


def test_epochs_are_permutations_and_the_stream_is_endless():
    items = _take(TrainingSampler(7, seed=0), 70)
    for epoch in range(10):
        assert sorted(i for i, _ in items[epoch * 7:(epoch + 1) * 7]) == list(range(7))
    assert [i for i, _ in items[:7]] != [i for i, _ in items[7:14]]


def test_resume_at_k_yields_what_an_uninterrupted_run_yields():
    for groups in (None, [0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1]):
        for rank in (0, 1):
            full = _take(TrainBatchSampler(11, 3, seed=5, rank=rank, world_size=2, group_ids=groups), 20)
            for k in (1, 7, 13):
                resumed = _take(TrainBatchSampler(11, 3, seed=5, rank=rank, world_size=2, start_iter=k,
                                                  group_ids=groups), 20 - k)
                assert resumed == full[k:]


def test_aspect_ratio_groups_are_never_mixed_in_a_batch():
    groups = [0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1]
    batches = _take(TrainBatchSampler(11, 4, seed=0, group_ids=groups), 30)
    for batch in batches:
        assert len(batch) == 4 and len({groups[i] for i, _ in batch}) == 1
    assert {groups[batch[0][0]] for batch in batches} == {0, 1}


def test_inference_sampler_visits_every_image_once_across_ranks():
    for size, world in ((10, 3), (2, 4), (7, 1)):
        seen = []
        for rank in range(world):
            for batch in InferenceBatchSampler(size, 2, rank, world):
                seen.extend(batch)
        assert sorted(seen) == list(range(size))
