"""An exported file as a module with the model's calling convention: model([image, ...]) ->
[{"boxes", "scores", "labels"[, "masks", ...]}, ...], so the evaluator, predict and the
benchmark run it as they run the PyTorch model. The graph takes one image, so a list runs one
image at a time. The output keys are the file's own output names, whatever the model returns."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from detector.export.metadata import ExportMetadata


class ExportedDetector(nn.Module):
    """Base of the runtimes: a subclass opens the file and implements run(image) -> arrays in
    the file's output order. Holds no parameters; always in eval mode."""

    kind = ""   # onnx | openvino | torchscript

    def __init__(self, path: str, metadata: ExportMetadata):
        super().__init__()
        self.path = str(path)
        self.metadata = metadata
        self.output_names = list(metadata.outputs)
        self.precision = "f32"   # what the runtime computes in (OpenVINO: read back from the compiled model)
        self.train(False)

    def train(self, mode: bool = True) -> "ExportedDetector":
        return super().train(False)   # a graph in eval mode; the evaluator's model.train(was) must not flip it

    def run(self, image: np.ndarray) -> list:
        raise NotImplementedError

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            array = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
            values = self.run(array)
            if len(values) != len(self.output_names):
                raise RuntimeError(f"'{self.path}' returned {len(values)} outputs, its metadata names "
                                   f"{self.output_names}.")
            outputs.append({name: torch.from_numpy(np.array(value)) for name, value in zip(self.output_names, values)})
        return outputs

    def describe(self) -> str:
        return f"{self.kind} file {self.path} ({self.precision})"
