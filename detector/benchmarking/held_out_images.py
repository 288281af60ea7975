"""A checkpoint's own test split, read as the trained-weights sections need it: one image at a
time in this process (the images are resized and normalised by the model, like any prediction)."""
from __future__ import annotations

import torch


def single_image_test_loader(cfg):
    """The test loader of a copy of `cfg` with dataloader.num_workers=0 and test_batch_size=1
    (`cfg` itself is left unchanged)."""
    from omegaconf import OmegaConf, open_dict

    from detector.data import build_test_loader

    loader_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(loader_cfg):
        loader_cfg.dataloader.num_workers = 0
        loader_cfg.dataloader.test_batch_size = 1
    return build_test_loader(loader_cfg)


def first_test_images(loader, count: int) -> list[torch.Tensor]:
    """Up to `count` images, in the loader's order."""
    images: list[torch.Tensor] = []
    for batch in loader:
        images.extend(batch["images"])
        if len(images) >= count:
            break
    return images[:count]
