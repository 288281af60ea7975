"""Size and cost of a model: parameters, trainable parameters and FLOPs of one eval forward.

FLOPs come from torch.utils.flop_counter.FlopCounterMode, which counts a multiply-add as
2 FLOPs (a [m, k] x [k, n] product is 2mkn) and counts convolutions and matrix products
only: RoIAlign, NMS, interpolation and element-wise ops are left out, as in the FLOP
figures published for detectors. For a detector the count covers one image of
`image_size` (h, w) run at that size (the model's own test resize is bypassed), with
the proposals a random image produces: the box head's share varies a little with their
number, bounded by model.rpn.post_nms_topk_test.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def _run_at_size(model: nn.Module, height: int, width: int) -> Iterator[None]:
    """A detector whose eval resize leaves an image of (height, width) as it is."""
    pre = getattr(model, "preprocessor", None)
    if pre is None or not hasattr(pre, "min_size_test"):
        yield
        return
    saved = pre.min_size_test, pre.max_size_test
    pre.min_size_test, pre.max_size_test = min(height, width), max(height, width)
    try:
        yield
    finally:
        pre.min_size_test, pre.max_size_test = saved


def count_flops(model: nn.Module, image_size: tuple[int, int]) -> int:
    """FLOPs of one eval forward of a (3, h, w) image (multiply-add = 2 FLOPs).

    Detectors (anything with this project's `preprocessor`) get a list of one image,
    other models (the classifier) a batch of one. Training mode, gradients and the global
    random number generators are left as they were.
    """
    from torch.utils.flop_counter import FlopCounterMode

    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be (height, width) in pixels, got {tuple(image_size)}.")
    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)  # the same image each time, global RNGs untouched
    image = torch.rand(3, height, width, generator=generator).to(device)
    detector = hasattr(model, "preprocessor")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _run_at_size(model, height, width), FlopCounterMode(display=False) as counter:
            model([image]) if detector else model(image[None])
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_summary(model: nn.Module, image_size: tuple[int, int] = (800, 1333)) -> dict[str, Any]:
    """{"params", "trainable_params", "gflops", "image_size": [h, w]} of `model`."""
    module = model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    params = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    flops = count_flops(module, image_size)
    return {
        "params": int(params),
        "trainable_params": int(trainable),
        "gflops": flops / 1e9,
        "image_size": [int(image_size[0]), int(image_size[1])],
    }


def format_model_summary(summary: dict[str, Any]) -> str:
    h, w = summary["image_size"]
    return (f"Model summary: {summary['params']:,} parameters ({summary['trainable_params']:,} trainable), "
            f"{summary['gflops']:.2f} GFLOPs for one {h}x{w} image at test time "
            "(a multiply-add counts as 2 FLOPs; convolutions and matrix products only).")
