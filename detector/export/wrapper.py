"""The detector's own eval forward for one image, as a module a trace stays valid for at every
input size.

`ExportableDetector(model)(image)` is a thin adapter around `model`: it preprocesses one
[3, H, W] tensor (normalize, resize, pad, as `ImagePreprocessor` does in eval mode) keeping
every size a tensor computed from the input's shape, then runs the model's own
`FasterRCNN.detect` (backbone, RPN proposal selection, multi-level RoIAlign, RoI heads and
their detection selection) and `FasterRCNN.postprocess` (boxes back to the input's pixels).
Those are written once for both eager use and tracing (sizes as tensors, no Python branch on
counts; see detector.modeling.boxes), so the trace records arithmetic instead of the example
image's sizes. Only preprocessing lives here: the model's resize takes Python sizes.

It returns a tuple (boxes [N, 4] in input-image pixels, scores [N], labels [N] int64), plus
masks [N, 1, H, W] (float probabilities pasted into the input image, H x W its size) for a
model with a mask branch, equal to `model([image])[0]` up to float rounding;
tests/tools/test_export.py and tests/export/test_masks.py check this.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from detector.modeling.faster_rcnn import FasterRCNN

BOX_OUTPUTS = ("boxes", "scores", "labels")
SIZE_TABLE_LIMIT = 16384   # integer_resized_size reproduces eager float64 sizes for sides below this


def size_of(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x.shape[dim] as an int64 tensor. While tracing, shape entries already are tensors that
    the tracer follows; in eager mode they are ints and are wrapped."""
    size = x.shape[dim]
    return size if isinstance(size, torch.Tensor) else torch.tensor(size, dtype=torch.int64)


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


@functools.lru_cache(maxsize=16)
def float64_floor_shortfalls(target: int, limit: int = SIZE_TABLE_LIMIT) -> tuple[int, ...]:
    """The sides d < limit for which the eager model's float64 arithmetic, floor(d * (target / d)),
    gives target - 1 instead of target (e.g. d = 97 for target 800: 799.9999999999999). About
    one side in twenty: the exported graph must reproduce them to resize to the eager sizes."""
    return tuple(d for d in range(1, limit) if math.floor(d * (target / d)) != target)


def integer_resized_size(height: torch.Tensor, width: torch.Tensor, min_size: int,
                         max_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval resize's output size, floor(side * min(min_size / short, max_size / long)), in
    int64 arithmetic only, for runtimes that compute float64 in float32 (OpenVINO's CPU plugin:
    there 200 * (160 / 200) floors to 159). The exact quotient side * target // governing side
    equals the eager float64 floor except where the eager product lands one ulp below a whole
    number; for the governing side itself (side == short or long) those cases are the listed
    shortfalls of float64_floor_shortfalls (sides up to SIZE_TABLE_LIMIT). The other side can
    be off the same way only when side * target / governing is a whole number and float64 rounds
    below it (about 1 in 4000 side pairs); it then resizes one pixel larger than eagerly."""
    short = torch.where(height < width, height, width)
    long = torch.where(height < width, width, height)
    # min_size / short <= max_size / long, compared exactly.
    by_short = min_size * long <= max_size * short
    target = torch.where(by_short, torch.tensor(min_size), torch.tensor(max_size))
    governing = torch.where(by_short, short, long)
    shortfall = torch.where(by_short, (governing == torch.tensor(float64_floor_shortfalls(min_size))).any(),
                            (governing == torch.tensor(float64_floor_shortfalls(max_size))).any())
    sizes = []
    for side in (height, width):
        exact = side * target // governing
        sizes.append(exact - (shortfall & (side == governing)).to(torch.int64))
    return sizes[0], sizes[1]


class ExportableDetector(nn.Module):
    """image [3, H, W] float in [0, 1] (RGB, any H and W) -> (boxes, scores, labels[, masks]),
    the entries of `output_names`.

    Shares the modules (and so the weights) of `model`; holds no parameters of its own.
    portable_resize: resize with `bilinear_resize` (gathers) instead of F.interpolate, so a
    runtime's own resize operator cannot round differently; the ONNX export turns it on.
    integer_sizes: compute the resized size with integer_resized_size (no float64), for a graph
    that OpenVINO runs; the OpenVINO export turns it on.
    """

    def __init__(self, model: FasterRCNN, portable_resize: bool = False, integer_sizes: bool = False):
        super().__init__()
        self.model = model
        self.portable_resize = portable_resize
        self.integer_sizes = integer_sizes
        self.eval()

    @property
    def output_names(self) -> tuple[str, ...]:
        """The result keys forward returns, in order: boxes, scores, labels, and masks when the
        RoI heads have a mask head (Mask R-CNN, Cascade Mask R-CNN; the convention of
        detector.modeling.mask_branch.MaskBranch, as `model.roi_heads.mask_head` in the config)."""
        has_masks = getattr(getattr(self.model, "roi_heads", None), "mask_head", None) is not None   # one-stage: none
        # A keypoint head (Keypoint R-CNN): keypoints [N, K, 3] and keypoints_scores [N, K] too.
        has_keypoints = getattr(getattr(self.model, "roi_heads", None), "keypoint_head", None) is not None
        return (BOX_OUTPUTS + (("masks",) if has_masks else ())
                + (("keypoints", "keypoints_scores") if has_keypoints else ()))

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
        if self.integer_sizes:
            new_h, new_w = integer_resized_size(height, width, int(pre.min_size_test), int(pre.max_size_test))
        else:
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

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pre = self.model.preprocessor
        original = torch.stack([size_of(image, 1), size_of(image, 2)])
        normalized = pre.normalize(image.to(pre.pixel_mean.device, torch.float32))
        resized, image_size = self.resize(normalized)
        batch = self.pad(resized)
        padded = torch.stack([size_of(batch, 2), size_of(batch, 3)])
        detections, _ = self.model.detect(batch, image_size[None], padded)
        result = self.model.postprocess(detections, image_size[None], original[None])[0]
        return tuple(result[name] for name in self.output_names)
