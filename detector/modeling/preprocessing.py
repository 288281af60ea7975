"""Turning a list of images into one padded, normalized batch (boxes go back to input pixels
with detector.modeling.boxes.boxes_to_original).

In eval mode each image is resized so its short side is `min_size_test` (long side at most
`max_size_test`), with the same bilinear interpolation and scale rule as torchvision's
GeneralizedRCNNTransform, so detections match torchvision's for the same weights. In train
mode images are used at the size given: the data pipeline has already resized them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

INPUT_FORMATS = ("RGB", "BGR")


@dataclass
class ImageBatch:
    tensor: torch.Tensor                    # [N, 3, H_pad, W_pad]
    image_sizes: list[tuple[int, int]]      # (h, w) of each image after resizing, before padding
    original_sizes: list[tuple[int, int]]   # (h, w) of each input image

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def validate_images(images) -> None:
    if isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a list of [3, H, W] float tensors, got a single tensor of shape "
                         f"{tuple(images.shape)}; pass [image] or list(batch).")
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"images must be a list of [3, H, W] float tensors, got {type(images).__name__}.")
    if len(images) == 0:
        raise ValueError("images is an empty list; pass at least one [3, H, W] float tensor.")
    for i, image in enumerate(images):
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"images[{i}] is a {type(image).__name__}, expected a [3, H, W] float tensor.")
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"images[{i}] has shape {tuple(image.shape)}, expected [3, H, W] (3 colour channels first).")
        if not image.is_floating_point():
            raise ValueError(f"images[{i}] has dtype {image.dtype}, expected a float tensor with values in [0, 1] "
                             "(e.g. image.float() / 255).")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"images[{i}] is empty (shape {tuple(image.shape)}).")


def detector_call(model: nn.Module, images: Sequence[torch.Tensor], targets: Sequence[dict] | None):
    """torchvision's calling convention for a detector with `preprocessor`, `num_classes`,
    `detect(pixels, image_sizes, padded_size, targets)` and `postprocess(detections, image_sizes,
    original_sizes)`: the losses in train mode, the detections in the input images' pixels in eval."""
    validate_images(images)
    if model.training:
        validate_targets(targets, len(images), model.num_classes)
    batch = model.preprocessor(images)
    if model.training:
        targets = targets_on_device(targets, batch.tensor.device)
    detections, losses = model.detect(batch.tensor, batch.image_sizes, batch.padded_size, targets)
    if model.training:
        return losses
    return model.postprocess(detections, batch.image_sizes, batch.original_sizes)


def targets_on_device(targets: Sequence[dict], device: torch.device) -> list[dict]:
    """Training targets on the batch's device: boxes as float32 and labels, with the instance
    masks [G, H, W] (a mask head) and keypoints [G, K, 3] (a keypoint head) when given."""
    return [{"boxes": t["boxes"].to(device, torch.float32), "labels": t["labels"].to(device),
             **{key: t[key].to(device) for key in ("masks", "keypoints") if key in t}} for t in targets]


def validate_targets(targets, num_images: int, num_classes: int | None = None) -> None:
    if targets is None:
        raise ValueError("targets are required in training mode: a list of {'boxes': [M, 4], 'labels': [M]} dicts, "
                         "one per image (call model.eval() for inference).")
    if not isinstance(targets, (list, tuple)) or len(targets) != num_images:
        got = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"targets must be a list with one dict per image ({num_images}), got {got}.")
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'.")
        boxes, labels = target["boxes"], target["labels"]
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
            raise ValueError(f"targets[{i}]['boxes'] must be a float tensor of shape [M, 4] (x1, y1, x2, y2), got {shape}.")
        if not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes'] has dtype {boxes.dtype}, expected a float tensor.")
        if not isinstance(labels, torch.Tensor) or labels.shape != boxes.shape[:1]:
            raise ValueError(f"targets[{i}]['labels'] must be a tensor of shape [{boxes.shape[0]}] (one label per box).")
        if not torch.isfinite(boxes).all():
            raise ValueError(f"targets[{i}]['boxes'] contains NaN or infinite values.")
        bad = torch.nonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]), as_tuple=True)[0]
        if bad.numel():
            j = int(bad[0])
            raise ValueError(f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} has x2 <= x1 or y2 <= y1: boxes must be "
                             "(x1, y1, x2, y2) with positive width and height; drop or fix degenerate boxes.")
        if labels.numel() and (int(labels.min()) < 1 or (num_classes is not None and int(labels.max()) > num_classes)):
            raise ValueError(f"targets[{i}]['labels'] has values in [{int(labels.min())}, {int(labels.max())}], "
                             f"expected 1..{num_classes} (0 is reserved for background).")


class ImagePreprocessor(nn.Module):
    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float], input_format: str = "RGB",
                 min_size_test: int = 800, max_size_test: int = 1333, size_divisibility: int = 32):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"model.input.format='{input_format}'; valid choices: {', '.join(INPUT_FORMATS)}.")
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(f"model.input.pixel_mean/pixel_std need 3 values each, got {list(pixel_mean)} / {list(pixel_std)}.")
        # Buffers (not parameters) so they follow .to(device) but are not trained; not saved
        # in the state dict because they come from the config.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.input_format = input_format
        self.min_size_test = min_size_test
        self.max_size_test = max_size_test
        self.size_divisibility = size_divisibility

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_format == "BGR":
            # Inputs are RGB by contract; weights trained on BGR (Detectron2) need the flip.
            image = image.flip(0)
        return (image - self.pixel_mean) / self.pixel_std

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        scale = min(self.min_size_test / min(height, width), self.max_size_test / max(height, width))
        return F.interpolate(image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                             align_corners=False)[0]

    def forward(self, images: Sequence[torch.Tensor]) -> ImageBatch:
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        processed = []
        for image in images:
            image = self.normalize(image.to(self.pixel_mean.device, torch.float32))
            if not self.training:
                image = self.resize(image)
            processed.append(image)
        image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in processed]
        divisor = self.size_divisibility
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)
        padded_h = int(math.ceil(max_h / divisor) * divisor) if divisor > 1 else max_h
        padded_w = int(math.ceil(max_w / divisor) * divisor) if divisor > 1 else max_w
        batch = processed[0].new_zeros((len(processed), 3, padded_h, padded_w))
        for i, image in enumerate(processed):
            batch[i, :, : image.shape[-2], : image.shape[-1]].copy_(image)
        return ImageBatch(batch, image_sizes, original_sizes)
