"""load_exported: an exported file as a runnable module (its runtime chosen from its content),
refusing what cannot apply to it with a message that says what to do instead."""
from __future__ import annotations

import logging
import os

import torch

from detector.deploy.exported_model import ExportedDetector
from detector.deploy.file_kind import ONNX, OPENVINO, TORCHSCRIPT, file_kind
from detector.deploy.metadata_reader import openvino_entries, read_metadata
from detector.export.metadata import ExportMetadata

PRECISIONS = ("fp32", "bf16")


def check_device(kind: str, device: str | torch.device, path: str) -> None:
    device = str(device)
    if device.startswith("cuda") and kind in (OPENVINO, TORCHSCRIPT):
        what = ("OpenVINO runs this file on the CPU" if kind == OPENVINO
                else "the TorchScript file was traced on the CPU and runs there")
        raise ValueError(f"'{path}': device {device} asked (--device / train.device), but {what}; use the CPU "
                         "(--device cpu, train.device=cpu), or an ONNX export with onnxruntime-gpu.")


def check_precision(kind: str, precision: str, path: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"test.precision={precision!r}: use fp32 or bf16.")
    if precision != "fp32" and kind != OPENVINO:
        raise ValueError(f"test.precision={precision} applies to OpenVINO files (its INFERENCE_PRECISION_HINT); "
                         f"'{path}' is a {kind} file, run in float32: set test.precision=fp32, or export with "
                         "--format openvino.")


def load_exported(path: str | os.PathLike, precision: str = "fp32", device: str | torch.device = "cpu",
                  threads: int | None = None, logger: logging.Logger | None = None,
                  metadata: ExportMetadata | None = None) -> ExportedDetector:
    """The exported file at `path` ready to run. precision: fp32 | bf16 (OpenVINO only);
    device: cpu (cuda: ONNX with onnxruntime-gpu only); threads: the runtime's intra-op threads
    (None: its default)."""
    path = str(path)
    kind = file_kind(path)
    check_device(kind, device, path)
    check_precision(kind, precision, path)
    if kind == OPENVINO:
        from detector.deploy.openvino_runner import OpenVinoDetector
        from detector.export.openvino_export import import_openvino

        model = import_openvino().Core().read_model(path)   # read once: metadata and graph
        metadata = metadata or ExportMetadata.from_strings(openvino_entries(path, model), path)
        return OpenVinoDetector(path, metadata, precision, threads, model=model, logger=logger)
    metadata = metadata or read_metadata(path)
    if kind == ONNX:
        from detector.deploy.onnxruntime_runner import OnnxRuntimeDetector

        return OnnxRuntimeDetector(path, metadata, str(device), threads)
    if kind == TORCHSCRIPT:
        from detector.deploy.torchscript_runner import TorchScriptDetector

        if threads:
            torch.set_num_threads(int(threads))
        return TorchScriptDetector(path, metadata)
    raise ValueError(f"'{path}' is not an exported file (ONNX, OpenVINO .xml or TorchScript); a checkpoint is "
                     "loaded with detector.weights.loading.load_model.")
