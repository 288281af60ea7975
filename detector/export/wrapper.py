"""The detector's eval-mode forward for one image, written so a trace of it stays valid for
every input size.

`FasterRCNN.forward` takes a list of images and turns sizes into Python ints (resize scale,
padding, anchor grids, per-image splits). A trace would freeze those ints to the example
image's size. `ExportableDetector` runs the same computation on one [3, H, W] tensor using
the model's own modules and weights, but keeps every size as a tensor computed from the
input's shape, so the tracer records the arithmetic instead of its result. Data-dependent
counts (anchors kept by top-k, boxes surviving NMS) are likewise recorded as operations.

It returns a tuple (boxes [N, 4] in input-image pixels, scores [N], labels [N] int64) equal
to `model([image])[0]` up to float rounding; tests/tools/test_export.py checks this.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, roi_align

from detector.modeling.faster_rcnn import FasterRCNN
from detector.modeling.rpn import clip_boxes


def size_of(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x.shape[dim] as an int64 tensor. While tracing, shape entries already are tensors that
    the tracer follows; in eager mode they are ints and are wrapped."""
    size = x.shape[dim]
    return size if isinstance(size, torch.Tensor) else torch.tensor(size, dtype=torch.int64)


def batched_nms_traceable(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                          iou_threshold: float) -> torch.Tensor:
    """NMS within each group (class or pyramid level) in one call: boxes of different groups are
    moved apart by an offset larger than any coordinate so they never overlap. Unlike
    torchvision's batched_nms it has no Python branch on the box count, so the trace also
    holds for an image with no candidates (the max then falls back to 0)."""
    largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes.dtype) * (largest + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def linear_taps(in_size: torch.Tensor, out_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For each output index along one axis: the two input indices and their weights, with
    PyTorch's CPU bilinear arithmetic (align_corners=False): source = (in / out) * (i + 0.5)
    - 0.5, clamped at 0, in float32. PyTorch's kernel computes the multiply-add as one fused
    operation (one rounding); doing it in float64 and rounding once to float32 gives the same
    number, where two float32 roundings would be off by an ulp (3e-5 at 400 px)."""
    scale = in_size.to(torch.float32) / out_size.to(torch.float32)
    centers = torch.arange(out_size, dtype=torch.float32) + 0.5
    source = (centers.to(torch.float64) * scale.to(torch.float64) - 0.5).to(torch.float32)
    source = torch.clamp(source, min=0.0)
    last = in_size - 1
    index0 = torch.floor(source).to(torch.int64)
    index0 = torch.where(index0 < last, index0, last)
    index1 = torch.where(index0 < last, index0 + 1, index0)
    weight1 = torch.clamp(source - index0.to(torch.float32), 0.0, 1.0)
    return index0, index1, 1.0 - weight1, weight1


def bilinear_resize(image: torch.Tensor, height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """image [C, H, W] -> [C, height, width], the same numbers as F.interpolate(mode="bilinear",
    align_corners=False) to float rounding, from gathers and sums. onnxruntime's own Resize
    maps output to input coordinates with a differently rounded scale (out / in), which moves
    pixel values by up to ~1e-4 and boxes of a trained model by up to ~1e-2 px."""
    y0, y1, wy0, wy1 = linear_taps(size_of(image, 1), height)
    x0, x1, wx0, wx1 = linear_taps(size_of(image, 2), width)
    top, bottom = image.index_select(1, y0), image.index_select(1, y1)
    # Width first, then height: the order PyTorch's kernel sums in.
    top = top.index_select(2, x0) * wx0 + top.index_select(2, x1) * wx1
    bottom = bottom.index_select(2, x0) * wx0 + bottom.index_select(2, x1) * wx1
    return top * wy0[:, None] + bottom * wy1[:, None]


class ExportableDetector(nn.Module):
    """image [3, H, W] float in [0, 1] (RGB, any H and W) -> (boxes, scores, labels).

    Shares the modules (and so the weights) of `model`; holds no parameters of its own.
    portable_resize: resize with `bilinear_resize` (gathers) instead of F.interpolate, so a
    runtime's own resize operator cannot round differently; the ONNX export turns it on.
    """

    def __init__(self, model: FasterRCNN, portable_resize: bool = False):
        super().__init__()
        self.model = model
        self.portable_resize = portable_resize
        self.eval()

    def train(self, mode: bool = True) -> "ExportableDetector":
        # Inference only. torch.onnx.export puts the module back into the mode it found it
        # in afterwards; a wrapper in train mode would switch the shared model's BatchNorm
        # layers to batch statistics, changing the model the caller still holds.
        return super().train(False)

    # --- preprocessing: normalize, resize, pad (as ImagePreprocessor in eval mode) ---------
    def resize(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the resized image and its (height, width) as an int64 tensor [2]."""
        pre = self.model.preprocessor
        height, width = size_of(image, 1), size_of(image, 2)
        # float64 like the eager model's Python arithmetic, so the resized size (a floor) is the
        # same integer even where h * scale lands next to a whole number. Written with where()
        # and tensor / tensor because the ONNX exporter lowers min/max and number / tensor
        # through float32 (Min, Reciprocal), which turns 428 * (320 / 428) into 319.99998.
        short = torch.where(height < width, height, width).to(torch.float64)
        long = torch.where(height < width, width, height).to(torch.float64)
        to_short = torch.tensor(float(pre.min_size_test), dtype=torch.float64) / short
        to_long = torch.tensor(float(pre.max_size_test), dtype=torch.float64) / long
        scale = torch.where(to_short < to_long, to_short, to_long)
        new_h = torch.floor(height.to(torch.float64) * scale).to(torch.int64)
        new_w = torch.floor(width.to(torch.float64) * scale).to(torch.int64)
        if self.portable_resize:
            resized = bilinear_resize(image, new_h, new_w)
        else:
            if not torch.jit.is_tracing():
                new_h, new_w = int(new_h), int(new_w)   # eager interpolate wants ints
            resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
        return resized, torch.stack([size_of(resized, 1), size_of(resized, 2)])

    def pad(self, image: torch.Tensor) -> torch.Tensor:
        """Zero-pad bottom and right to a multiple of size_divisibility, returns [1, 3, H', W']."""
        divisor = self.model.preprocessor.size_divisibility
        if divisor <= 1:
            return image[None]
        height, width = size_of(image, 1), size_of(image, 2)
        pad_h = (height + divisor - 1) // divisor * divisor - height
        pad_w = (width + divisor - 1) // divisor * divisor - width
        if not torch.jit.is_tracing():
            pad_h, pad_w = int(pad_h), int(pad_w)
        return F.pad(image[None], (0, pad_w, 0, pad_h))

    # --- region proposals (as RPN.forward + select_proposals in eval mode) ----------------
    def anchors(self, features: list[torch.Tensor], padded: torch.Tensor) -> list[torch.Tensor]:
        generator = self.model.rpn.anchor_generator
        result = []
        for level, (feature, size) in enumerate(zip(features, generator.sizes)):
            height, width = size_of(feature, 2), size_of(feature, 3)
            if generator.strides is None:
                stride_y, stride_x = padded[0] // height, padded[1] // width
            else:
                stride_y = stride_x = generator.strides[level]
            shift_x = torch.arange(width, dtype=torch.int64, device=feature.device) * stride_x
            shift_y = torch.arange(height, dtype=torch.int64, device=feature.device) * stride_y
            grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
            grid_x, grid_y = grid_x.reshape(-1), grid_y.reshape(-1)
            shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=1)
            cell = generator.cell_anchors(size, torch.float32, feature.device)
            result.append((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4))
        return result

    def proposals(self, features: list[torch.Tensor], image_size: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
        rpn = self.model.rpn
        objectness, deltas = rpn.head(features)
        anchors = self.anchors(features, padded)
        pre_nms_topk = rpn.pre_nms_topk["test"]
        top_scores, top_boxes, top_levels = [], [], []
        for level, (level_anchors, level_logits, level_deltas) in enumerate(zip(anchors, objectness, deltas)):
            logits, level_deltas = level_logits[0].float(), level_deltas[0].float()
            k = torch.clamp(size_of(logits, 0), max=pre_nms_topk)
            logits, index = logits.topk(k)
            boxes = rpn.box_coder.decode(level_deltas[index], level_anchors[index]).reshape(-1, 4)
            top_scores.append(logits)
            top_boxes.append(boxes)
            top_levels.append(torch.full_like(index, level))
        scores = torch.sigmoid(torch.cat(top_scores))
        boxes = clip_boxes(torch.cat(top_boxes)[None], image_size[None])[0]
        levels = torch.cat(top_levels)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        keep = (widths >= rpn.min_box_size) & (heights >= rpn.min_box_size) & (scores >= rpn.score_thresh)
        keep = torch.nonzero(keep)[:, 0]
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms_traceable(boxes, scores, levels, rpn.nms_thresh)[: rpn.post_nms_topk["test"]]
        return boxes[keep]

    # --- second stage (as RoIHeads.forward + postprocess in eval mode) --------------------
    def pool(self, features: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        """MultiLevelRoIAlign for one image: pool each box from its level, then put the
        results back in box order (each box index occurs once, so sorting inverts the split)."""
        pooler = self.model.roi_heads.pooler
        rois = torch.cat([boxes.new_zeros((size_of(boxes, 0), 1)), boxes], dim=1)
        if len(features) == 1:
            return roi_align(features[0], rois, pooler.output_size, pooler.scales[0], pooler.sampling_ratio,
                             pooler.aligned)
        levels = pooler.assign_levels(boxes)
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, pooler.scales)):
            index = torch.nonzero(levels == level)[:, 0]
            pooled.append(roi_align(feature, rois[index], pooler.output_size, scale, pooler.sampling_ratio,
                                    pooler.aligned))
            order.append(index)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]

    def detections(self, features: list[torch.Tensor], proposals: torch.Tensor, image_size: torch.Tensor):
        heads = self.model.roi_heads
        logits, deltas = heads.box_predictor(heads.box_head(self.pool(features, proposals)))
        logits, deltas = logits.float(), deltas.float()
        boxes = heads.box_coder.decode(deltas, proposals)                 # [R, K+1, 4]
        boxes = clip_boxes(boxes[None], image_size[None])[0]
        scores = F.softmax(logits, -1)
        labels = torch.arange(size_of(scores, 1), device=scores.device).view(1, -1).expand_as(scores)
        # Background column out; every (proposal, class) pair is a candidate.
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        keep = (scores > heads.score_thresh) & (widths >= heads.min_box_size) & (heights >= heads.min_box_size)
        keep = torch.nonzero(keep)[:, 0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms_traceable(boxes, scores, labels, heads.nms_thresh)[: heads.detections_per_img]
        return boxes[keep], scores[keep], labels[keep]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pre = self.model.preprocessor
        original = torch.stack([size_of(image, 1), size_of(image, 2)])
        normalized = pre.normalize(image.to(pre.pixel_mean.device, torch.float32))
        resized, image_size = self.resize(normalized)
        batch = self.pad(resized)
        padded = torch.stack([size_of(batch, 2), size_of(batch, 3)])
        if getattr(self.model, "channels_last", False):
            # As the model does: NHWC activations for faster convolutions (TorchScript keeps
            # the layout; ONNX has none, onnxruntime picks its own).
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = self.model.backbone(batch)
        proposals = self.proposals(list(features.values()), image_size, padded)
        pooled = [features[name] for name in self.model.pooled_levels]
        boxes, scores, labels = self.detections(pooled, proposals, image_size)
        # Back to input pixels: (original / resized) per axis, in float32 like the model.
        ratio = original.to(torch.float32) / image_size.to(torch.float32)     # (h, w)
        boxes = boxes * torch.stack([ratio[1], ratio[0], ratio[1], ratio[0]])
        return boxes, scores, labels
