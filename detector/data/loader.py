"""Batches for the trainer and the evaluator (the contract in docs/INTERFACES.md).

The batch stream is a pure function of (seed, rank, world size, iteration): the samplers
decide which samples, and each sample's augmentation is seeded from its stream position,
so the number of workers and resuming change nothing.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from detector.data.build import build_dataset, build_held_out_dataset
from detector.data.samplers import InferenceBatchSampler, TrainBatchSampler


def worker_init(worker_id: int) -> None:
    # Each worker is one process of many on few cores: stop OpenCV and torch from each
    # starting a thread per core. Global RNGs are seeded for any third-party code that
    # uses them; our augmentation is seeded per sample and does not depend on this.
    import cv2

    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def collate_train(samples: list[dict]) -> dict:
    return {
        "images": [s["image"] for s in samples],
        "targets": [s["target"] for s in samples],
        "skipped": [message for s in samples for message in s["skipped"]],
    }


def collate_test(samples: list[dict]) -> dict:
    kept = [s for s in samples if s["image"] is not None]
    return {
        "images": [s["image"] for s in kept],
        "image_ids": [s["image_id"] for s in kept],
        "file_names": [s["file_name"] for s in kept],
        "skipped": [message for s in samples for message in s["skipped"]],
    }


def build_train_loader(cfg: DictConfig, rank: int = 0, world_size: int = 1, start_iter: int = 0,
                       with_masks: bool = False, with_keypoints: bool = False) -> DataLoader:
    """Endless batches {"images", "targets", "skipped"} of cfg.dataloader.batch_size images.

    with_masks: each target also has "masks" (uint8 [G, H, W]) for a mask model (build_dataset);
    with_keypoints: "keypoints" (float32 [G, K, 3]) for a keypoint model."""
    dataset = build_dataset(cfg, "train", with_masks=with_masks, with_keypoints=with_keypoints)
    groups = dataset.aspect_groups() if cfg.dataloader.aspect_ratio_grouping else None
    batch_sampler = TrainBatchSampler(len(dataset), int(cfg.dataloader.batch_size), int(cfg.seed), rank, world_size,
                                      start_iter, groups)
    return _loader(dataset, batch_sampler, collate_train, int(cfg.dataloader.num_workers), persistent=False,
                   pin_memory=wants_pinned_memory(cfg))


def build_test_loader(cfg: DictConfig, rank: int = 0, world_size: int = 1, max_images: int | None = None) -> DataLoader:
    """Batches {"images", "image_ids", "file_names", "skipped"}: every test image once across ranks;
    with `max_images` (test.max_images), only the first N of them.

    A batch whose images were all unreadable (under on_bad_sample=skip) has empty lists
    and only "skipped" messages.
    """
    dataset = build_dataset(cfg, "test")
    size = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    batch_sampler = InferenceBatchSampler(size, int(cfg.dataloader.test_batch_size), rank, world_size)
    # Persistent: the evaluator iterates the same loader at every evaluation.
    return _loader(dataset, batch_sampler, collate_test, int(cfg.dataloader.num_workers), persistent=True,
                   pin_memory=wants_pinned_memory(cfg))


def build_held_out_loader(cfg: DictConfig, rank: int = 0, world_size: int = 1, with_masks: bool = False,
                          with_keypoints: bool = False) -> DataLoader:
    """This rank's held-out batches for the validation loss (build.build_held_out_dataset), in
    the training batches' form {"images", "targets", "skipped"}, cfg.dataloader.batch_size
    images each, with the test loader's workers."""
    dataset = build_held_out_dataset(cfg, rank, world_size, with_masks=with_masks, with_keypoints=with_keypoints)
    return held_out_batches(dataset, int(cfg.dataloader.batch_size), int(cfg.dataloader.num_workers),
                            wants_pinned_memory(cfg))


def held_out_batches(dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Every sample of a held-out dataset once, in order, in batches of `batch_size`; each
    sample's stream position is its index (it has no random augmentation to seed)."""
    batches = [[(i, i) for i in range(start, min(start + batch_size, len(dataset)))]
               for start in range(0, len(dataset), batch_size)]
    # Persistent: the validation iterates the same loader at every period.
    return _loader(dataset, batches, collate_train, num_workers, persistent=True, pin_memory=pin_memory)


def wants_pinned_memory(cfg: DictConfig) -> bool:
    # Page-locked batches let `.to("cuda", non_blocking=True)` overlap the copy with compute.
    return str(cfg.train.device) != "cpu" and torch.cuda.is_available()


def _loader(dataset, batch_sampler, collate, num_workers: int, persistent: bool, pin_memory: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate,
        num_workers=num_workers,
        worker_init_fn=worker_init if num_workers > 0 else None,
        persistent_workers=persistent and num_workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=2 if num_workers > 0 else None,
    )
