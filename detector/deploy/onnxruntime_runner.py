"""An ONNX export run by ONNX Runtime (CPU; CUDA where onnxruntime-gpu provides it)."""
from __future__ import annotations

import numpy as np

from detector.deploy.exported_model import ExportedDetector
from detector.export.metadata import ExportMetadata


class OnnxRuntimeDetector(ExportedDetector):
    kind = "onnx"

    def __init__(self, path: str, metadata: ExportMetadata, device: str = "cpu", threads: int | None = None):
        super().__init__(path, metadata)
        try:
            import onnxruntime
        except ModuleNotFoundError:
            raise ImportError("running an ONNX file needs the 'onnxruntime' package: pip install -e '.[deploy]'.") \
                from None
        options = onnxruntime.SessionOptions()
        # ONNX Runtime's worker threads spin for a while after each run by default, holding the
        # cores that the rest of the process (pre- and post-processing, another model) needs next:
        # on 2 cores an OpenVINO run right after one took 1.5x its time. A detector's run lasts tens
        # of milliseconds or more, so the wake-up that spinning saves is negligible.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ValueError(f"'{path}': device {device} asked, but this onnxruntime has no CUDA provider "
                                 "(install onnxruntime-gpu), or run it on the CPU (--device cpu, train.device=cpu).")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        names = [output.name for output in self.session.get_outputs()]
        if names != self.output_names:
            raise ValueError(f"'{path}' has outputs {names}, its metadata names {self.output_names}.")
        self.input_name = self.session.get_inputs()[0].name

    def run(self, image: np.ndarray) -> list:
        return self.session.run(None, {self.input_name: image})
