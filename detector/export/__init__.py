"""Export a trained detector to ONNX or TorchScript: one image in, (boxes, scores, labels) out,
plus masks for a mask model.

    from detector.export import export_model
    export_model("model_final.pth", "onnx", "model.onnx")

The exported graph contains the whole eval-mode detector: resize and normalization, backbone,
RPN, RoI heads and post-processing (NMS). Input: `image`, float32 [3, H, W] in [0, 1], RGB,
any H and W. Outputs: `boxes` [N, 4] (x1, y1, x2, y2 in the input image's pixels), `scores`
[N], `labels` [N] int64 in 1..K; a model with a mask head (model=mask_rcnn_fpn,
cascade_mask_rcnn_fpn: the checkpoint's config says) also `masks` [N, 1, H, W], float32
probabilities pasted into the input image (threshold at 0.5 for binary masks), as
`model([image])[0]["masks"]`. The graph is a trace of the model's own eval forward; see
`detector.export.wrapper` for how sizes stay dynamic.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from detector.export.onnx_export import export_onnx
from detector.export.torchscript_export import export_torchscript
from detector.export.wrapper import ExportableDetector

__all__ = ["FORMATS", "ExportableDetector", "export_model", "export_onnx", "export_torchscript", "example_image"]

FORMATS = ("onnx", "torchscript")


def example_image(height: int = 480, width: int = 640) -> torch.Tensor:
    """The image the exporters trace with. Its values do not matter (no branch depends on
    them); its sides differ so nothing can silently assume a square input."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand((3, height, width), generator=generator)


def export_model(weights: str | os.PathLike, format: str, output: str | os.PathLike,
                 overrides: Iterable[str] = ()) -> Path:
    """Load checkpoint `weights` (its own config, plus "key=value" `overrides` such as
    "model.roi_heads.score_thresh=0.3") and write the exported model to `output`."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format '{format}'; valid choices: {', '.join(FORMATS)}.")
    from detector.weights.loading import load_model

    model = load_model(weights, overrides=overrides, device="cpu")
    wrapper = ExportableDetector(model)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        export_onnx(wrapper, example_image(), output)
    else:
        export_torchscript(wrapper, example_image(), output)
    return output
