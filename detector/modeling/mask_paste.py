"""Pasting Mask R-CNN's per-box masks into the image, two ways (a leaf module: torch only).

A mask head predicts an M x M grid (28 x 28) of probabilities for each detected box; pasting
places that grid into the image at the box. Where the grid's cells sit relative to the box is
part of what the weights learned, so a model pastes the way its publisher did:

- "torchvision" (torchvision, and this project's training): the grid gets a border of zeros
  and the box grows by the same fraction, the grown box is truncated to whole pixels and the
  grid is resized bilinearly onto those pixels (`paste_masks_in_image`).
- "detectron2" (Detectron2's model zoo): the M cells span the box's own continuous
  coordinates exactly; each image pixel centre inside or near the box samples the grid
  bilinearly, with zeros beyond the grid's outer cell centres (`paste_masks_on_box_grid`;
  Detectron2 does this with grid_sample, align_corners=False).

The two differ by up to about a pixel at every mask edge, which moves the mask IoU of small
objects a lot. Both are separable bilinear resamplings, so each is computed for all masks at
once as rows @ mask @ cols^T, without a Python loop over the detections; with the image size
kept as a tensor under tracing, one export trace serves every image size and detection count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_PASTE_CHOICES = ("torchvision", "detectron2")


def check_mask_paste(mode: str) -> str:
    if mode not in MASK_PASTE_CHOICES:
        raise ValueError(f"model.roi_heads.mask_paste='{mode}' is not supported; valid choices: "
                         f"{', '.join(MASK_PASTE_CHOICES)} (detectron2 for Detectron2's converted mask models).")
    return mode


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, image_size, mode: str) -> torch.Tensor:
    """Masks [N, 1, M, M] (probabilities in box coordinates) pasted at boxes [N, 4] (that image's
    pixels) into an image of image_size = (height, width), the `mode` way: [N, 1, height, width]."""
    if check_mask_paste(mode) == "detectron2":
        return paste_masks_on_box_grid(masks, boxes, image_size)
    return paste_masks_in_image(masks, boxes, image_size)


def _image_size(image_size) -> tuple:
    height, width = image_size[0], image_size[1]
    if not torch.jit.is_tracing():
        # Traced (detector.export), the image size stays a tensor so the trace fits any image.
        height, width = int(height), int(width)
    return height, width


def _expand_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack([center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h], dim=1)


def _resize_weights(start: torch.Tensor, end: torch.Tensor, image_length: int, mask_length: int,
                    dtype: torch.dtype) -> torch.Tensor:
    """Along one axis, [N, image_length, mask_length] weights W such that W @ mask is the mask
    bilinearly resized (align_corners=False, as F.interpolate) to the integer box
    [start, end] (end - start + 1 pixels, at least 1) and placed there, zero elsewhere."""
    length = (end - start + 1).clamp(min=1).to(torch.float32)
    pixel = torch.arange(image_length, device=start.device)[None]
    local = pixel - start[:, None]
    inside = (local >= 0) & (pixel <= end[:, None])
    # A true float32 division (`int / tensor` multiplies by the reciprocal, one rounding more).
    step = torch.full_like(length, float(mask_length)).div(length).to(torch.float64)
    # float32 positions computed as one fused multiply-add, as PyTorch's interpolation kernel
    # does once compiled: the pasted values then agree with F.interpolate to float rounding.
    source = ((local.to(torch.float32) + 0.5).to(torch.float64) * step[:, None] - 0.5).to(torch.float32)
    source = source.clamp(min=0.0)
    low = source.floor().clamp(max=mask_length - 1)
    fraction = (source - low).clamp(0.0, 1.0)
    low, fraction = low.to(torch.int64), fraction.to(dtype)
    high = (low + 1).clamp(max=mask_length - 1)
    weights = (F.one_hot(low, mask_length).to(dtype) * (1.0 - fraction)[..., None]
               + F.one_hot(high, mask_length).to(dtype) * fraction[..., None])
    return weights * inside[..., None].to(dtype)


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                         padding: int = 1) -> torch.Tensor:
    """torchvision's pasting: masks [N, 1, M, M] at boxes [N, 4] into an image of
    image_size = (height, width): [N, 1, height, width].

    Each mask gets a border of `padding` zeros and its box grows by the same fraction (so the
    mask edge fades out instead of being cut), the box is truncated to integers, the mask is
    resized bilinearly to the box's (x2 - x1 + 1) x (y2 - y1 + 1) pixels and written at
    (x1, y1), clipped to the image."""
    height, width = _image_size(image_size)
    size = masks.shape[-1]
    padded = F.pad(masks[:, 0], (padding,) * 4).float()
    boxes = _expand_boxes(boxes.float(), float(size + 2 * padding) / size).to(torch.int64)
    rows = _resize_weights(boxes[:, 1], boxes[:, 3], height, size + 2 * padding, padded.dtype)
    cols = _resize_weights(boxes[:, 0], boxes[:, 2], width, size + 2 * padding, padded.dtype)
    return torch.bmm(torch.bmm(rows, padded), cols.transpose(1, 2))[:, None].to(masks.dtype)


def _box_grid_weights(start: torch.Tensor, end: torch.Tensor, image_length, mask_length: int) -> torch.Tensor:
    """Along one axis, [N, image_length, mask_length] weights W such that W @ mask samples the
    mask bilinearly at every image pixel centre, the mask's cells spanning [start, end] (float
    box coordinates) and reading as zero beyond its outer cell centres. float32 throughout, with
    grid_sample's own normalisation, so the sample positions round as Detectron2's do."""
    centre = torch.arange(image_length, device=start.device, dtype=torch.float32)[None] + 0.5
    length = end - start
    # A box of no width covers no pixel centre; a length of 1 keeps the arithmetic finite.
    has_area = length > 0
    length = torch.where(has_area, length, torch.ones_like(length))
    normalized = (centre - start[:, None]) / length[:, None] * 2 - 1      # -1 and 1 at the box edges
    source = ((normalized + 1) * mask_length - 1) / 2                    # in cells: 0 is the first centre
    # Far outside the grid every tap is zero anyway; clamping keeps the integer index in range.
    source = source.clamp(-2.0, mask_length + 1.0)
    low = source.floor()
    fraction = source - low
    low = low.to(torch.int64)
    taps = []
    for tap, weight in ((low, 1.0 - fraction), (low + 1, fraction)):
        on_grid = (tap >= 0) & (tap < mask_length) & has_area[:, None]
        weight = torch.where(on_grid, weight, torch.zeros_like(weight))
        taps.append(F.one_hot(tap.clamp(0, mask_length - 1), mask_length).to(torch.float32) * weight[..., None])
    return taps[0] + taps[1]


def paste_masks_on_box_grid(masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Detectron2's pasting: masks [N, 1, M, M] whose cells span boxes [N, 4] exactly (no
    truncation to whole pixels, no border), sampled bilinearly at each pixel centre of an image
    of image_size = (height, width): [N, 1, height, width], zero away from each box."""
    height, width = _image_size(image_size)
    size = masks.shape[-1]
    boxes = boxes.float()
    rows = _box_grid_weights(boxes[:, 1], boxes[:, 3], height, size)
    cols = _box_grid_weights(boxes[:, 0], boxes[:, 2], width, size)
    return torch.bmm(torch.bmm(rows, masks[:, 0].float()), cols.transpose(1, 2))[:, None].to(masks.dtype)
