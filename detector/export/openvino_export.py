"""OpenVINO export: the ONNX graph of the same eval forward, converted to OpenVINO IR (.xml
graph + .bin weights) with `openvino.convert_model`, and saved with the weights in float32.

Why through ONNX: the ONNX graph is what detector.export already checks against eager, and
OpenVINO's ONNX frontend converts its RoiAlign, NonMaxSuppression and dynamic shapes as they
are; the IR's inputs and outputs are the ONNX export's (`image`; boxes, scores, labels[, masks]).
Two differences in the graph, both because OpenVINO's CPU plugin computes float64 in float32:
the resized size is integer arithmetic (ExportableDetector.integer_sizes; in float32,
200 * (160 / 200) floors to 159), and the resize is the Interpolate operator (whose coordinates
match PyTorch's) instead of the float64 gathers the onnxruntime graph needs.

The steps are separate (`openvino_model`, then `save_openvino`) so that a step between them,
such as NNCF's post-training quantization, takes and returns the same `openvino.Model`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch

from detector.export.onnx_export import export_onnx
from detector.export.wrapper import ExportableDetector

RT_INFO_SECTION = "detector"   # rt_info entries: <rt_info><detector><class_names value="..."/>...


def import_openvino():
    try:
        import openvino
    except ModuleNotFoundError:
        raise ImportError("OpenVINO export and runs need the 'openvino' package: pip install -e '.[deploy]' "
                          "(openvino, onnx, onnxruntime).") from None
    return openvino


def openvino_model(wrapper: ExportableDetector, example: torch.Tensor):
    """The `openvino.Model` of `wrapper`'s eval forward (float32 weights, dynamic image size)."""
    ov = import_openvino()
    integer_sizes = wrapper.integer_sizes
    wrapper.integer_sizes = True
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(wrapper, example, path, portable_resize=False)
            model = ov.convert_model(str(path))
    finally:
        wrapper.integer_sizes = integer_sizes
    return model


def checked_output(output: str | os.PathLike) -> Path:
    """`output` as a Path, refused unless it names the .xml (callers check before any long work)."""
    output = Path(output)
    if output.suffix != ".xml":
        raise ValueError(f"--output {output}: an OpenVINO model is written as NAME.xml (its weights go to NAME.bin "
                         "beside it); give a file name ending in .xml.")
    return output


def save_openvino(model, output: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """`model` (an openvino.Model) to `output` (.xml, its weights in the .bin beside it), the
    metadata strings in its rt_info under RT_INFO_SECTION. Weights stay float32
    (compress_to_fp16=False): the precision is chosen when the file is run (test.precision)."""
    ov = import_openvino()
    output = checked_output(output)
    for key, value in (metadata or {}).items():
        model.set_rt_info(value, [RT_INFO_SECTION, key])
    ov.save_model(model, str(output), compress_to_fp16=False)
    return output


def export_openvino(wrapper: ExportableDetector, example: torch.Tensor, output: str | os.PathLike,
                    metadata: Mapping[str, str] | None = None) -> Path:
    return save_openvino(openvino_model(wrapper, example), output, metadata)
