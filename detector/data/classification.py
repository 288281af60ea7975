"""Image-classification data, from the config to batches: `cls_class_names`, `build_cls_dataset`,
`build_cls_train_loader` and `build_cls_test_loader` (used by detector.tasks.classification).

The stack, one job per module: classification_folders (the files and the class order),
classification_transforms (the albumentations pipelines), classification_dataset (decoding,
seeding, bad images), class_balance (balanced sampling and loss weights) and this module,
which reads `cfg.data` / `cfg.dataloader` and puts them together.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from detector.data.class_balance import BALANCE_CHOICES, ClassBalancedBatchSampler
from detector.data.classification_dataset import ImageFolderDataset
from detector.data.classification_folders import class_folders, scan_image_folder
from detector.data.classification_transforms import build_cls_test_transform, build_cls_train_transform
from detector.data.loader import wants_pinned_memory, worker_init
from detector.data.samplers import InferenceBatchSampler, TrainBatchSampler


def split_root(cfg: DictConfig, split: str) -> Path:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return Path(str(cfg.data.root)) / str(cfg.data.train_dir if split == "train" else cfg.data.test_dir)


def cls_class_names(cfg: DictConfig) -> list[str]:
    """The class folder names of the training split (label i <-> names[i]); cheap."""
    return class_folders(split_root(cfg, "train"))


def build_cls_dataset(cfg: DictConfig, split: str) -> ImageFolderDataset:
    """ImageFolder dataset of `split` from cfg.data; labels follow the training classes."""
    data = cfg.data
    samples, names = scan_image_folder(split_root(cfg, split), cls_class_names(cfg))
    train = split == "train"
    mean, std = list(data.mean), list(data.std)
    if train:
        aug = data.aug
        transform = build_cls_train_transform(int(data.image_size), list(aug.scale), float(aug.hflip_prob),
                                              float(aug.vflip_prob), bool(aug.rotate90), bool(aug.color_jitter),
                                              float(aug.color_jitter_strength), mean, std)
    else:
        transform = build_cls_test_transform(int(data.image_size), mean, std)
    return ImageFolderDataset(samples, names, transform, train=train, seed=int(cfg.seed),
                              on_bad_sample=str(data.on_bad_sample), max_image_pixels=int(data.max_image_pixels),
                              cache_images=bool(data.cache_images))


def collate_cls_train(samples: list[dict]) -> dict:
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "labels": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
        "skipped": [message for s in samples for message in s["skipped"]],
    }


def collate_cls_test(samples: list[dict]) -> dict:
    kept = [s for s in samples if s["image"] is not None]
    return {
        "images": torch.stack([s["image"] for s in kept]) if kept else torch.zeros(0),
        "labels": torch.tensor([s["label"] for s in kept], dtype=torch.int64),
        "indices": [s["index"] for s in kept],
        "skipped": [message for s in samples for message in s["skipped"]],
    }


def _loader(cfg: DictConfig, dataset, batch_sampler, collate, persistent: bool) -> DataLoader:
    num_workers = int(cfg.dataloader.num_workers)
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers,
                      worker_init_fn=worker_init if num_workers > 0 else None,
                      persistent_workers=persistent and num_workers > 0, pin_memory=wants_pinned_memory(cfg),
                      prefetch_factor=2 if num_workers > 0 else None)


def build_cls_train_loader(cfg: DictConfig, rank: int = 0, world_size: int = 1, start_iter: int = 0,
                           dataset: ImageFolderDataset | None = None) -> DataLoader:
    """Endless batches {"images": [B,3,S,S], "labels": [B], "skipped": [...]} of
    cfg.dataloader.batch_size images per process."""
    dataset = dataset or build_cls_dataset(cfg, "train")
    balance = str(cfg.data.balance)
    if balance not in BALANCE_CHOICES:
        raise ValueError(f"data.balance={balance!r}: expected one of {', '.join(BALANCE_CHOICES)}.")
    batch_size = int(cfg.dataloader.batch_size)
    if balance == "sampling":
        sampler = ClassBalancedBatchSampler(dataset.labels, len(dataset.class_names), batch_size, int(cfg.seed),
                                            float(cfg.data.balance_strength), rank, world_size, start_iter)
    else:
        sampler = TrainBatchSampler(len(dataset), batch_size, int(cfg.seed), rank, world_size, start_iter)
    return _loader(cfg, dataset, sampler, collate_cls_train, persistent=False)


def build_cls_test_loader(cfg: DictConfig, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Batches {"images", "labels", "indices", "skipped"}: every test image once across ranks."""
    dataset = build_cls_dataset(cfg, "test")
    sampler = InferenceBatchSampler(len(dataset), int(cfg.dataloader.test_batch_size), rank, world_size)
    return _loader(cfg, dataset, sampler, collate_cls_test, persistent=True)
