"""The image-classification dataset: decodes (path, label) samples and applies the transform,
seeded from the sample's position in the training stream.

The training stream follows the detection loaders' rule (detector/data/samplers.py): it is a
pure function of (seed, rank, world size, iteration), and each sample's augmentation is seeded
from its stream position, so worker count and resuming change nothing. Bad images are
replaced (training) or left out and reported (testing), as detection's are.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from detector.data.classification_transforms import to_chw_tensor
from detector.data.dataset import ON_BAD_SAMPLE, BadSampleError, BadSampleWarning
from detector.data.image_io import DEFAULT_MAX_IMAGE_PIXELS, BadImageError, read_image_rgb

MAX_REPLACEMENTS = 50


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
