"""ONNX export through torch.onnx's TorchScript-based exporter (dynamo=False).

Why this exporter: the model's eval forward is written to trace (see
detector.export.wrapper), and torchvision registers ONNX
symbolics for its nms and roi_align with it. The torch.export-based exporter would have to
prove shape guards (short side vs long side, top-k sizes) symbolically and specialise them.
The graph takes `image` [3, height, width] with dynamic height and width and returns
`boxes` [N, 4], `scores` [N], `labels` [N] with dynamic N, and for a mask model `masks`
[N, 1, height, width] (probabilities pasted into the input image); it runs under onnxruntime.
"""
from __future__ import annotations

import os
import warnings
from typing import Mapping

import torch

from detector.export.wrapper import ExportableDetector

# 16 is the first opset whose RoiAlign has torchvision's aligned / non-aligned sampling.
OPSET_VERSION = 17
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["boxes", "scores", "labels"]   # a mask model adds "masks"
DYNAMIC_AXES = {"image": {1: "height", 2: "width"}, "boxes": {0: "detections"}, "scores": {0: "detections"},
                "labels": {0: "detections"}, "masks": {0: "detections", 2: "height", 3: "width"},
                # a keypoint model's outputs (K, the keypoints per object, is fixed by its weights)
                "keypoints": {0: "detections"}, "keypoints_scores": {0: "detections"}}


def export_onnx(wrapper: ExportableDetector, example: torch.Tensor, output: str | os.PathLike,
                metadata: Mapping[str, str] | None = None, portable_resize: bool = True) -> None:
    """Write the ONNX graph of `wrapper` to `output`, `metadata` (detector.export.metadata's
    strings) in its metadata_props. portable_resize: resize with gathers (onnxruntime's Resize
    rounds its coordinates differently); the OpenVINO export, whose Interpolate matches
    PyTorch's, turns it off."""
    import torchvision.ops  # noqa: F401  (registers the ONNX symbolics for nms and roi_align)

    output_names = list(wrapper.output_names)
    previous_resize = wrapper.portable_resize
    wrapper.portable_resize = portable_resize
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about shapes turned into tensors are the intended dynamic sizes;
        # the exporter's own deprecation notice is about dynamo=False, chosen on purpose.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        try:
            torch.onnx.export(wrapper, (example,), str(output), dynamo=False, opset_version=OPSET_VERSION,
                              input_names=INPUT_NAMES, output_names=output_names,
                              dynamic_axes={name: DYNAMIC_AXES[name] for name in INPUT_NAMES + output_names},
                              do_constant_folding=True)
        except ModuleNotFoundError as error:
            raise ImportError(f"ONNX export needs the '{error.name}' package: pip install -e '.[export]' "
                              "(onnx, onnxruntime).") from None
        finally:
            wrapper.portable_resize = previous_resize
    if metadata:
        write_onnx_metadata(output, metadata)


def write_onnx_metadata(path: str | os.PathLike, metadata: Mapping[str, str]) -> None:
    """`metadata` as the model's metadata_props (what onnxruntime's custom_metadata_map shows)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, dict(metadata))
    onnx.save(model, str(path))
