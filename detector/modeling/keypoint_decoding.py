"""Keypoints <-> heatmaps: the training targets and loss of a keypoint head, and the decoding of
its heatmaps into keypoints at test time, the way torchvision or Detectron2 does it.

Targets: each ground-truth keypoint falls in one cell of the proposal's S x S heatmap grid
(floor of its position scaled to the grid; a point exactly on the box's right/bottom edge goes to
the last cell); the loss is a cross-entropy over the S*S cells of each visible keypoint's heatmap
("spatial softmax"), averaged over the visible keypoints inside their proposals. Both libraries
train this way.

Decoding: each detection's K heatmaps are resized (bicubic) to the box's size rounded up to
pixels; the arg-max cell's centre (d + 0.5), scaled back to the box, is the keypoint. The two
libraries differ in the score: torchvision reports the heatmap logit at that cell; Detectron2
a probability, the softmax of the upsampled logits normalised by the pooled (S x S) heatmap's sum,
so that boxes of different sizes give comparable scores. `decoding` picks one; Detectron2's
converted settings pick "detectron2".
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

KEYPOINT_DECODINGS = ("torchvision", "detectron2")


def check_keypoint_decoding(decoding: str) -> str:
    if decoding not in KEYPOINT_DECODINGS:
        raise ValueError(f"model.roi_heads.keypoint_decoding={decoding!r}; valid choices: {', '.join(KEYPOINT_DECODINGS)} "
                         "(torchvision: the score is the heatmap logit; detectron2: a softmax probability).")
    return decoding


def keypoints_to_heatmap_targets(keypoints: torch.Tensor, rois: torch.Tensor, size: int):
    """(cell index y * size + x [R, K] int64, valid [R, K] bool) of keypoints [R, K, 3] in their
    rois [R, 4]: valid where the keypoint is labelled (v > 0) and inside the roi."""
    x0, y0 = rois[:, 0:1], rois[:, 1:2]
    scale_x = size / (rois[:, 2:3] - rois[:, 0:1])
    scale_y = size / (rois[:, 3:4] - rois[:, 1:2])
    x, y = keypoints[..., 0], keypoints[..., 1]
    on_right_edge = x == rois[:, 2:3]
    on_bottom_edge = y == rois[:, 3:4]
    cell_x = ((x - x0) * scale_x).floor().long()
    cell_y = ((y - y0) * scale_y).floor().long()
    # The right/bottom edge itself belongs to the last cell (floor would put it one past).
    cell_x[on_right_edge] = size - 1
    cell_y[on_bottom_edge] = size - 1
    inside = (cell_x >= 0) & (cell_y >= 0) & (cell_x < size) & (cell_y < size)
    valid = inside & (keypoints[..., 2] > 0)
    return (cell_y * size + cell_x) * valid, valid


def keypoint_loss(logits: torch.Tensor, proposals: Sequence[torch.Tensor], gt_keypoints: Sequence[torch.Tensor],
                  matched_gt: Sequence[torch.Tensor]) -> torch.Tensor:
    """Spatial cross-entropy of heatmap logits [R, K, S, S] (R: the positive proposals of every
    image, in order) against the matched ground truth's keypoints; 0 (with a gradient path)
    when no keypoint is visible inside its proposal."""
    count, num_keypoints, height, width = logits.shape
    if height != width:
        raise ValueError(f"keypoint heatmaps must be square, got {height}x{width}.")
    cells, valid = [], []
    for image_proposals, keypoints, matches in zip(proposals, gt_keypoints, matched_gt):
        image_cells, image_valid = keypoints_to_heatmap_targets(keypoints[matches], image_proposals, height)
        cells.append(image_cells.reshape(-1))
        valid.append(image_valid.reshape(-1))
    cells, valid = torch.cat(cells), torch.cat(valid)
    chosen = torch.nonzero(valid, as_tuple=True)[0]
    if chosen.numel() == 0:
        return logits.sum() * 0
    return F.cross_entropy(logits.reshape(count * num_keypoints, height * width)[chosen], cells[chosen])


def heatmaps_to_keypoints(maps: torch.Tensor, rois: torch.Tensor, decoding: str = "torchvision"):
    """(keypoints [R, K, 3] as (x, y, 1) in the rois' pixels, scores [R, K]) from heatmap logits
    [R, K, S, S] of the rois [R, 4] (see the module doc for the two decodings)."""
    return decode_heatmaps(maps.detach().float(), rois.detach().float(), decoding == "detectron2")


@torch.jit.script_if_tracing
def decode_heatmaps(maps: torch.Tensor, rois: torch.Tensor, softmax_scores: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """heatmaps_to_keypoints' loop, written so that a trace (detector.export) keeps it a loop over
    however many detections an image has: scripted when traced, plain Python otherwise; results
    gathered with cat, which the ONNX exporter turns into a sequence of any length."""
    num_keypoints = maps.shape[1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1.0)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1.0)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    keypoints = torch.zeros((0, num_keypoints, 3), dtype=torch.float32, device=maps.device)
    scores = torch.zeros((0, num_keypoints), dtype=torch.float32, device=maps.device)
    for i in range(int(rois.shape[0])):
        # One resize per detection: each box has its own size in pixels.
        height, width = int(heights_ceil[i].item()), int(widths_ceil[i].item())
        roi_map = F.interpolate(maps[i][:, None], size=[height, width], mode="bicubic", align_corners=False)[:, 0]
        flat = roi_map.reshape(num_keypoints, -1)
        position = flat.argmax(dim=1)
        columns = roi_map.shape[2]   # the resized width, as the exported graph's own int64 shape
        x_int = position % columns
        y_int = torch.div(position - x_int, columns, rounding_mode="floor")
        x = (x_int.float() + 0.5) * (widths[i] / widths_ceil[i]) + rois[i, 0]
        y = (y_int.float() + 0.5) * (heights[i] / heights_ceil[i]) + rois[i, 1]
        peak = flat.gather(1, position[:, None])[:, 0]   # roi_map[k, y, x], as a gather ONNX exports
        if softmax_scores:
            # exp(peak - max) is 1 at the arg-max; the normaliser sums the pooled heatmap's cells.
            largest = flat.max(dim=1).values
            normaliser = (maps[i] - largest[:, None, None]).exp().sum(dim=(1, 2))
            peak = (peak - largest).exp() / normaliser
        keypoints = torch.cat([keypoints, torch.stack([x, y, torch.ones_like(x)], dim=1)[None]])
        scores = torch.cat([scores, peak[None]])
    return keypoints, scores


def keypoints_to_original(keypoints: torch.Tensor, resized, original) -> torch.Tensor:
    """Keypoints [..., 3] from the resized image's pixels to the input image's, as the boxes are
    scaled (float32 ratios original / resized, per axis); the third column is kept. Sizes are
    (height, width), ints or int tensors [2]."""
    resized = torch.as_tensor(resized, device=keypoints.device).to(torch.float32)
    original = torch.as_tensor(original, device=keypoints.device).to(torch.float32)
    ratio = original / resized                                                  # (h, w)
    scale = torch.stack([ratio[1], ratio[0]]).to(keypoints.dtype)
    return torch.cat([keypoints[..., :2] * scale, keypoints[..., 2:]], dim=-1)
