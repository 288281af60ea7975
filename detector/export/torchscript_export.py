"""TorchScript export: a trace of `ExportableDetector`, saved with torch.jit.save.

Tracing (not scripting) works because the model's own eval forward (FasterRCNN.detect and
postprocess, which the wrapper calls) and the wrapper's preprocessing keep every size and
data-dependent count as a traced tensor operation; the saved module runs on any image size. Loading it needs
torchvision's operators registered: `import torchvision` before `torch.jit.load(path)`.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Mapping

import torch

from detector.export.wrapper import ExportableDetector

# The archive's extra file holding detector.export.metadata's strings, as one JSON object.
METADATA_FILE = "detector_metadata.json"


def trace_detector(wrapper: ExportableDetector, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every shape it sees turned into a tensor; those are the
        # sizes the wrapper deliberately keeps dynamic (tests check two input sizes).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # torch.jit is deprecated in favour of torch.export, but it is what TorchScript is.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        # check_trace would rerun the example and compare; NMS makes that a tie-sensitive check.
        return torch.jit.trace(wrapper, (example,), check_trace=False)


def export_torchscript(wrapper: ExportableDetector, example: torch.Tensor, output: str | os.PathLike,
                       metadata: Mapping[str, str] | None = None) -> None:
    """Trace `wrapper` and save it to `output`, `metadata` as the archive's METADATA_FILE."""
    traced = trace_detector(wrapper, example)
    extra = {METADATA_FILE: json.dumps(dict(metadata))} if metadata else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        torch.jit.save(traced, str(output), _extra_files=extra)
