"""A TorchScript export run by torch.jit (CPU: the trace recorded CPU tensors for its sizes)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from detector.deploy.exported_model import ExportedDetector
from detector.export.metadata import ExportMetadata


class TorchScriptDetector(ExportedDetector):
    kind = "torchscript"

    def __init__(self, path: str, metadata: ExportMetadata):
        super().__init__(path, metadata)
        import torchvision  # noqa: F401  (registers nms / roi_align, which the graph calls)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # torch.jit's deprecation notice
            self.module = torch.jit.load(str(path), map_location="cpu")

    def run(self, image: np.ndarray) -> list:
        with torch.no_grad():
            return [value.numpy() for value in self.module(torch.from_numpy(image))]
