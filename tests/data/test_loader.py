"""Loaders: the batch contract, and output that depends on (seed, rank, iteration) only."""
import itertools

import torch

from detector.data import build_test_loader, build_train_loader


def _batches(loader, n):
    return list(itertools.islice(iter(loader), n))


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert [t["image_id"] for t in x["targets"]] == [t["image_id"] for t in y["targets"]]
        for image_x, image_y in zip(x["images"], y["images"]):
            assert torch.equal(image_x, image_y)
        for tx, ty in zip(x["targets"], y["targets"]):
            assert torch.equal(tx["boxes"], ty["boxes"]) and torch.equal(tx["labels"], ty["labels"])


def test_train_batches_follow_the_contract(shapes_cfg):
    batch = _batches(build_train_loader(shapes_cfg()), 1)[0]
    assert set(batch) == {"images", "targets", "skipped"} and batch["skipped"] == []
    assert len(batch["images"]) == len(batch["targets"]) == 4
    for image, target in zip(batch["images"], batch["targets"]):
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
        assert target["labels"].dtype == torch.int64 and int(target["labels"].min()) >= 1
        assert isinstance(target["image_id"], int)


def test_workers_do_not_change_the_batches(shapes_cfg):
    single = _batches(build_train_loader(shapes_cfg("dataloader.num_workers=0")), 4)
    workers = _batches(build_train_loader(shapes_cfg("dataloader.num_workers=2")), 4)
    _assert_same(single, workers)


def test_resume_at_k_equals_the_uninterrupted_run(coco128_cfg):
    # coco128 mixes landscape and portrait images, so aspect-ratio grouping is active.
    cfg = coco128_cfg("dataloader.aspect_ratio_grouping=true", "dataloader.batch_size=2")
    full = _batches(build_train_loader(cfg), 5)
    resumed = _batches(build_train_loader(cfg, start_iter=3), 2)
    _assert_same(full[3:], resumed)
    for batch in full:  # grouped: one orientation per batch
        assert len({image.shape[1] <= image.shape[2] for image in batch["images"]}) == 1


def test_ranks_see_different_samples(shapes_cfg):
    rank0 = _batches(build_train_loader(shapes_cfg(), rank=0, world_size=2), 3)
    rank1 = _batches(build_train_loader(shapes_cfg(), rank=1, world_size=2), 3)
    ids0 = [t["image_id"] for b in rank0 for t in b["targets"]]
    ids1 = [t["image_id"] for b in rank1 for t in b["targets"]]
    assert sorted(ids0 + ids1) == list(range(1, 25))  # 24 images: one epoch between the two ranks


def test_test_loader_visits_every_image_once_across_ranks(shapes_cfg):
    cfg = shapes_cfg("dataloader.test_batch_size=3")
    seen = []
    for rank in range(3):
        for batch in build_test_loader(cfg, rank=rank, world_size=3):
            assert set(batch) == {"images", "image_ids", "file_names", "skipped"}
            assert all(image.shape == (3, 320, 320) for image in batch["images"])  # not resized
            assert len(batch["images"]) == len(batch["image_ids"]) == len(batch["file_names"])
            seen.extend(batch["image_ids"])
    assert sorted(seen) == list(range(1, 9))
