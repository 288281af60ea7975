"""The images an int8 export is calibrated on, and the run config they come from.

Post-training quantization measures the range of every quantized activation on real inputs, so
the calibration images must look like what the file will see: the training split of the
model's own dataset by default (the checkpoint's config says which), or of the dataset that
`--calibration OVERRIDE...` composes (e.g. dataset=bccd, or dataset=auto dataset.path=DIR).
Training images, never test images: the test split is what the export then evaluates on.

Each image is what the exported graph takes, float32 [3, H, W] in [0, 1], RGB, at its own
size: the graph itself resizes and normalises, so the calibration runs the same resize as
every later image. The choice of images is seeded (the run config's `seed`), so the same
command writes the same file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

DEFAULT_IMAGES = 100


@dataclass(frozen=True)
class Calibration:
    """What an int8 file was calibrated on (written into its rt_info as `calibration`)."""
    dataset: str                 # cfg.dataset.name
    split: str                   # always "train"
    images: int                  # how many were used
    available: int               # how many usable images the split has
    seed: int
    overrides: tuple[str, ...]   # the --calibration overrides (empty: the checkpoint's own dataset)

    def to_json(self) -> str:
        return json.dumps({"dataset": self.dataset, "split": self.split, "images": self.images,
                           "available": self.available, "seed": self.seed, "overrides": list(self.overrides)})


def calibration_config(checkpoint_config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The run config the calibration (and the export's evaluation) reads its data from.

    No overrides: the checkpoint's own config (its dataset as it was trained, e.g. a carved
    test split recorded there). With overrides: the config they compose, as train_net would,
    holding the checkpoint's model and backbone -- what eval_only with the same overrides on
    the exported file evaluates."""
    source = OmegaConf.create(OmegaConf.to_container(checkpoint_config, resolve=True))
    if not overrides:
        return source
    from detector.config import load_config

    cfg = load_config(list(overrides))
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(cfg):
        cfg.model = source.model
        cfg.backbone = source.backbone
    return cfg


def calibration_images(cfg: DictConfig, count: int = DEFAULT_IMAGES,
                       overrides: Sequence[str] = ()) -> tuple[list[torch.Tensor], Calibration]:
    """`count` training images of cfg.dataset (all of them when it has fewer), chosen with
    cfg.seed, each float32 [3, H, W] in [0, 1]; and the record of that choice."""
    from detector.data.build import build_format
    from detector.data.dataset import DetectionDataset

    if count < 1:
        raise ValueError(f"--calibration-images {count}: give at least 1 (default {DEFAULT_IMAGES}).")
    fmt = build_format(cfg)
    index = fmt.index("train")
    records = [r for r in index.records if r.problem is None]   # unreadable or bad images calibrate nothing
    if not records:
        raise ValueError(f"dataset={cfg.dataset.name}: its training split has no usable image to calibrate the int8 "
                         "model on; give another dataset with --calibration dataset=NAME (or dataset=auto "
                         "dataset.path=DIR).")
    seed = int(cfg.seed)
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), size=min(count, len(records)), replace=False))
    # The test-sample path of the dataset: the image as read for any evaluation, no augmentation.
    dataset = DetectionDataset([records[i] for i in chosen], index.class_names, index.label_to_category_id, {},
                               train=False, on_bad_sample="skip", max_image_pixels=fmt.max_image_pixels)
    images = [sample["image"] for sample in (dataset[i] for i in range(len(dataset))) if sample["image"] is not None]
    record = Calibration(dataset=str(cfg.dataset.name), split="train", images=len(images), available=len(records),
                         seed=seed, overrides=tuple(str(o) for o in overrides))
    return images, record
