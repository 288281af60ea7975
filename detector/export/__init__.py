"""Export a trained detector to ONNX, OpenVINO IR or TorchScript: one image in, (boxes, scores,
labels) out, plus masks for a mask model.

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

Every file carries its metadata (detector.export.metadata: class names, input and
normalisation, the post-processing baked in, the checkpoint's config), so that
detector.deploy runs it alone: detector-predict --weights FILE, eval_only model.weights=FILE.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from detector.export.metadata import ExportMetadata, metadata_for
from detector.export.onnx_export import export_onnx
from detector.export.openvino_export import export_openvino
from detector.export.torchscript_export import export_torchscript
from detector.export.wrapper import ExportableDetector

__all__ = ["FORMATS", "ExportableDetector", "ExportMetadata", "export_model", "export_onnx", "export_openvino",
           "export_torchscript", "example_image", "exported_metadata"]

FORMATS = ("onnx", "torchscript", "openvino")


def example_image(height: int = 480, width: int = 640) -> torch.Tensor:
    """The image the exporters trace with. Its values do not matter (no branch depends on
    them); its sides differ so nothing can silently assume a square input."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand((3, height, width), generator=generator)


def export_model(weights: str | os.PathLike, format: str, output: str | os.PathLike,
                 overrides: Iterable[str] = ()) -> Path:
    """Load checkpoint `weights` (its own config, plus "key=value" `overrides` such as
    "model.roi_heads.score_thresh=0.3") and write the exported model to `output` (for openvino
    NAME.xml, and NAME.bin beside it), its metadata inside."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format '{format}'; valid choices: {', '.join(FORMATS)}.")
    output = Path(output)
    if format == "openvino" and output.suffix != ".xml":
        raise ValueError(f"--output {output}: an OpenVINO model is written as NAME.xml (its weights go to NAME.bin "
                         "beside it); give a file name ending in .xml.")
    from detector.weights.loading import model_from_checkpoint, read_model_checkpoint

    checkpoint = read_model_checkpoint(weights)   # one read: weights, config, iteration, category ids
    model = model_from_checkpoint(checkpoint, str(weights), overrides=list(overrides), device="cpu")
    wrapper = ExportableDetector(model)
    metadata = exported_metadata(model, wrapper, format, str(weights), checkpoint.iteration, checkpoint.category_ids)
    del checkpoint
    output.parent.mkdir(parents=True, exist_ok=True)
    exporter = {"onnx": export_onnx, "torchscript": export_torchscript, "openvino": export_openvino}[format]
    exporter(wrapper, example_image(), output, metadata=metadata.to_strings())
    return output


def exported_metadata(model, wrapper: ExportableDetector, format: str, source: str, iteration: int | None = None,
                      category_ids: list[int] | None = None) -> ExportMetadata:
    """The metadata of `model` (built from a checkpoint: its config is model.config) exported
    as `format` through `wrapper`."""
    return metadata_for(model.config, list(wrapper.output_names), format, source, iteration, category_ids)
