"""Image classification data: ImageFolder datasets, albumentations transforms, loaders.

Layout: ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg (what tools/crop_instances.py
writes). Labels are 0..K-1 in the sorted order of the train/ class folders; test/ must not
hold a class that train/ lacks.

The training stream follows the detection loaders' rule (detector/data/samplers.py): it is
a pure function of (seed, rank, world size, iteration), and each sample's augmentation is
seeded from its stream position, so worker count and resuming change nothing. Class
imbalance can be countered by sampling (`data.balance=sampling`, also a pure function of
the stream position) or by weighting the loss (`data.balance=loss`, see class_weights).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from detector.data.dataset import ON_BAD_SAMPLE, BadSampleError, BadSampleWarning
from detector.data.image_io import DEFAULT_MAX_IMAGE_PIXELS, BadImageError, read_image_rgb
from detector.data.loader import wants_pinned_memory, worker_init
from detector.data.samplers import InferenceBatchSampler, TrainBatchSampler

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
BALANCE_CHOICES = ("none", "sampling", "loss")
MAX_REPLACEMENTS = 50


# --------------------------------------------------------------------------- files

def class_folders(root: str | os.PathLike) -> list[str]:
    """Sorted names of the class folders under `root` (hidden folders ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder root {root} does not exist; expected {root}/<class>/*.jpg "
                                "(tools/crop_instances.py writes such folders).")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise FileNotFoundError(f"{root} holds no class folders; expected {root}/<class>/*.jpg.")
    return names


def scan_image_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """((path, label) pairs sorted by class then file name, class names). With
    `class_names` (e.g. the train split's), labels follow that list and a folder not in
    it is an error naming the folder."""
    root = Path(root)
    found = class_folders(root)
    if class_names is None:
        class_names = found
    else:
        class_names = list(class_names)
        extra = [name for name in found if name not in class_names]
        if extra:
            raise ValueError(f"{root} has class folder(s) {extra} that the training split lacks "
                             f"(training classes: {class_names}); the model cannot predict them.")
    samples = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue  # a class with no test images: reported as such by the evaluation
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                samples.append((str(path), label))
    if not samples:
        raise FileNotFoundError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders.")
    return samples, list(class_names)


# --------------------------------------------------------------------------- transforms

def build_cls_train_transform(image_size: int, scale: Sequence[float] = (0.6, 1.0), hflip_prob: float = 0.5,
                              vflip_prob: float = 0.0, rotate90: bool = False, color_jitter: bool = False,
                              color_jitter_strength: float = 0.2, mean: Sequence[float] = (0.485, 0.456, 0.406),
                              std: Sequence[float] = (0.229, 0.224, 0.225)) -> A.Compose:
    """Random resized crop to image_size x image_size, flips, optional 90-degree turns and
    colour jitter, then normalisation with `mean`/`std` (on the [0, 1] scale)."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"data.aug.scale={list(scale)} must satisfy 0 < min <= max <= 1.")
    steps = [A.RandomResizedCrop(size=(int(image_size), int(image_size)), scale=tuple(float(s) for s in scale),
                                 interpolation=cv2.INTER_LINEAR), A.HorizontalFlip(p=hflip_prob)]
    if vflip_prob > 0:
        steps.append(A.VerticalFlip(p=vflip_prob))
    if rotate90:
        steps.append(A.RandomRotate90(p=1.0))
    if color_jitter:
        s = color_jitter_strength
        steps.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4), p=0.8))
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    return A.Compose(steps)


def build_cls_test_transform(image_size: int, mean: Sequence[float] = (0.485, 0.456, 0.406),
                             std: Sequence[float] = (0.229, 0.224, 0.225)) -> A.Compose:
    """Resize to image_size x image_size (the whole object, as the training crops at scale 1) and normalise."""
    return A.Compose([A.Resize(int(image_size), int(image_size), interpolation=cv2.INTER_LINEAR),
                      A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)])


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


# --------------------------------------------------------------------------- dataset

class ImageFolderDataset(Dataset):
    """Map-style dataset over (path, label) pairs.

    Training (`train=True`): indexed by (index, stream position) pairs from a batch sampler;
    the transform's randomness is seeded from (seed, position). A bad image is replaced by
    another chosen from (seed, position, attempt) and reported in the batch's "skipped".
    Testing: indexed by int; a bad image comes back as image=None (left out and reported).
    `cache_images` decodes every image once up front (small crops: a few hundred MB at most).
    """

    def __init__(self, samples: list[tuple[str, int]], class_names: Sequence[str], transform=None, train: bool = False,
                 seed: int = 0, on_bad_sample: str = "skip", max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 cache_images: bool = False):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(f"data.on_bad_sample={on_bad_sample!r}: expected one of {ON_BAD_SAMPLE}")
        self.samples = list(samples)
        self.labels = np.asarray([label for _, label in self.samples], dtype=np.int64)
        self.class_names = list(class_names)
        self.transform = transform
        self.train = train
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF  # numpy seeds must be non-negative
        self.on_bad_sample = on_bad_sample
        self.max_image_pixels = int(max_image_pixels)
        self._cache: dict[int, np.ndarray | BadImageError] | None = None
        if cache_images:
            self._cache = {i: self._decode(i) for i in range(len(self.samples))}

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))

    def _decode(self, index: int) -> np.ndarray | BadImageError:
        try:
            return read_image_rgb(self.samples[index][0], None, self.max_image_pixels)
        except BadImageError as error:
            return error

    def _load(self, index: int) -> np.ndarray:
        image = self._cache[index] if self._cache is not None else self._decode(index)
        if isinstance(image, BadImageError):
            raise image
        return image

    def _bad(self, error: BadImageError, what: str) -> str:
        message = f"{error.path}: {error.reason}"
        if self.on_bad_sample == "error":
            raise BadSampleError(f"bad sample {message} (set data.on_bad_sample=skip to skip such samples)")
        warnings.warn(f"skipping bad sample {message}; {what}", BadSampleWarning, stacklevel=2)
        return message

    def _apply(self, image: np.ndarray, seed: int | None) -> torch.Tensor:
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(seed)
            image = self.transform(image=image)["image"]
        else:
            image = image.astype(np.float32) / 255.0
        return to_chw_tensor(image)

    def __getitem__(self, key) -> dict:
        if not self.train:
            index = int(key)
            try:
                image = self._apply(self._load(index), seed=0)
                skipped = []
            except BadImageError as error:
                image, skipped = None, [self._bad(error, "left out of the evaluation")]
            return {"image": image, "label": int(self.labels[index]), "index": index, "skipped": skipped}
        index, position = int(key[0]), int(key[1])
        skipped = []
        for attempt in range(MAX_REPLACEMENTS + 1):
            try:
                image = self._load(index)
                break
            except BadImageError as error:
                skipped.append(self._bad(error, "replaced by another training image"))
                index = int(np.random.default_rng([self.seed, position, attempt + 1]).integers(len(self.samples)))
        else:
            raise BadSampleError(f"{MAX_REPLACEMENTS + 1} bad samples in a row: most of the training set is "
                                 f"unreadable; last: {skipped[-1]}")
        sample_seed = int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])
        return {"image": self._apply(image, sample_seed), "label": int(self.labels[index]), "index": index,
                "skipped": skipped}


# --------------------------------------------------------------------------- class balance

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


# --------------------------------------------------------------------------- builders

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
