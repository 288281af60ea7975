"""Every operation on boxes (x1, y1, x2, y2 in pixels), in one place.

Used by the model (RPN, RoI heads, cascade stages, preprocessing), test-time augmentation and
the export. Each function is written once for both eager use and tracing (torch.jit.trace /
torch.onnx.export): sizes may be Python ints or tensors (a traced shape is a tensor), and
nothing branches in Python on the number or the values of the boxes while tracing, so a
trace stays valid for any image size and any number of detections.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms as torchvision_batched_nms
from torchvision.ops import nms

def size_tensor(image_sizes, device: torch.device | str | None = None) -> torch.Tensor:
    """(height, width) of each image as an int64 tensor [N, 2]: from a list of (h, w) pairs, or
    a tensor [N, 2] as is (the traced path keeps its sizes as tensors)."""
    if isinstance(image_sizes, torch.Tensor):
        return image_sizes.to(device=device, dtype=torch.int64)
    return torch.as_tensor(list(image_sizes), dtype=torch.int64, device=device).view(-1, 2)


def clip_boxes(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """boxes [N, R, 4] clipped to per-image sizes [N, 2] (height, width)."""
    heights = image_sizes[:, 0].to(boxes.dtype).view(-1, 1)
    widths = image_sizes[:, 1].to(boxes.dtype).view(-1, 1)
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), widths)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), heights)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), widths)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), heights)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def clip_to_image(boxes, image_size):
    """boxes [..., 4] of one image clipped to its (height, width): ints or an int tensor [2].
    boxes may also be a numpy array (the data pipeline's), clipped the same way."""
    if isinstance(boxes, np.ndarray):
        height, width = image_size
        return np.stack([boxes[..., 0].clip(0, width), boxes[..., 1].clip(0, height),
                         boxes[..., 2].clip(0, width), boxes[..., 3].clip(0, height)], axis=-1)
    if isinstance(image_size, torch.Tensor):
        size = size_tensor(image_size.view(1, 2), boxes.device)
    else:
        size = size_tensor([tuple(image_size)], boxes.device)
    return clip_boxes(boxes[None], size)[0]


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) of a mirrored image of `width` pixels, in the original image:
    a pixel column x becomes width - x, and left and right edges swap."""
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def boxes_to_original(boxes: torch.Tensor, resized, original) -> torch.Tensor:
    """Scale boxes from the resized image's pixels to the input image's pixels; both sizes are
    (height, width), as ints or int tensors [2]. The ratios are float32 (original / resized)."""
    resized = torch.as_tensor(resized, device=boxes.device).to(torch.float32)
    original = torch.as_tensor(original, device=boxes.device).to(torch.float32)
    ratio = original / resized                                                  # (h, w)
    scale = torch.stack([ratio[1], ratio[0], ratio[1], ratio[0]]).to(boxes.dtype)
    return boxes * scale


def box_sizes_at_least(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Mask of the boxes [..., 4] (a tensor or a numpy array) whose width and height are both
    at least `min_size`."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return (widths >= min_size) & (heights >= min_size)


def encode_boxes(targets: torch.Tensor, references: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """targets, references: [N, 4] -> deltas [N, 4] = (wx*dx/w, wy*dy/h, ww*log(w'/w), wh*log(h'/h)),
    the R-CNN parameterization with widths x2 - x1."""
    wx, wy, ww, wh = weights
    ref_w = references[:, 2] - references[:, 0]
    ref_h = references[:, 3] - references[:, 1]
    ref_cx = references[:, 0] + 0.5 * ref_w
    ref_cy = references[:, 1] + 0.5 * ref_h
    tgt_w = targets[:, 2] - targets[:, 0]
    tgt_h = targets[:, 3] - targets[:, 1]
    tgt_cx = targets[:, 0] + 0.5 * tgt_w
    tgt_cy = targets[:, 1] + 0.5 * tgt_h
    dx = wx * (tgt_cx - ref_cx) / ref_w
    dy = wy * (tgt_cy - ref_cy) / ref_h
    dw = ww * torch.log(tgt_w / ref_w)
    dh = wh * torch.log(tgt_h / ref_h)
    return torch.stack((dx, dy, dw, dh), dim=1)


def decode_boxes(deltas: torch.Tensor, references: torch.Tensor, weights: Sequence[float],
                 scale_clamp: float) -> torch.Tensor:
    """deltas [N, 4*k] (k boxes per reference, e.g. one per class), references [N, 4]
    -> boxes [N, k, 4]; the inverse of `encode_boxes`, log-scales clamped at `scale_clamp`."""
    references = references.to(deltas.dtype)
    wx, wy, ww, wh = weights
    widths = references[:, 2] - references[:, 0]
    heights = references[:, 3] - references[:, 1]
    ctr_x = references[:, 0] + 0.5 * widths
    ctr_y = references[:, 1] + 0.5 * heights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=scale_clamp)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=scale_clamp)
    pred_cx = dx * widths[:, None] + ctr_x[:, None]
    pred_cy = dy * heights[:, None] + ctr_y[:, None]
    half_w = 0.5 * (torch.exp(dw) * widths[:, None])
    half_h = 0.5 * (torch.exp(dh) * heights[:, None])
    return torch.stack((pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h), dim=2)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each group (class or pyramid level); indices of the kept boxes by decreasing score.

    Eager: torchvision's batched_nms, so detections stay those of torchvision's models. While
    tracing: one NMS over boxes moved apart per group by an offset larger than any coordinate,
    with no Python branch on the box count (torchvision's has one), so the trace also holds
    for an image with no candidates (the largest coordinate then falls back to 0)."""
    if not torch.jit.is_tracing():
        return torchvision_batched_nms(boxes, scores, groups, iou_threshold)
    largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes.dtype) * (largest + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
