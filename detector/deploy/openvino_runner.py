"""An OpenVINO IR run by OpenVINO's CPU plugin, at an explicit inference precision.

test.precision (fp32 | bf16) becomes INFERENCE_PRECISION_HINT (f32 | bf16), always set: left
unset, OpenVINO picks bf16 by itself on a CPU with AVX512-BF16 or AMX, so fp32 must be asked
for. What the compiled model actually uses is read back (a CPU without native bf16 runs f32
whatever the hint) and logged when it is not what was asked."""
from __future__ import annotations

import logging

import numpy as np

from detector.deploy.exported_model import ExportedDetector
from detector.export.metadata import ExportMetadata
from detector.export.openvino_export import import_openvino

HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoDetector(ExportedDetector):
    kind = "openvino"

    def __init__(self, path: str, metadata: ExportMetadata, precision: str = "fp32", threads: int | None = None,
                 model=None, logger: logging.Logger | None = None):
        super().__init__(path, metadata)
        ov = import_openvino()
        core = ov.Core()
        if model is None:
            model = core.read_model(str(path))
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.requested = HINTS[precision]
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        log = logger or logging.getLogger("detector")
        if self.precision != self.requested:
            log.warning("OpenVINO: test.precision=%s asked for INFERENCE_PRECISION_HINT=%s, but this CPU runs %s "
                        "(read back from the compiled model; bf16 needs AVX512-BF16 or AMX).", precision,
                        self.requested, self.precision)
        else:
            log.info("OpenVINO runs %s at inference precision %s.", path, self.precision)
        # A tensor may carry several names (an input folded into a no-op Cast keeps both); match by set.
        names = [sorted(output.get_names()) for output in self.compiled.outputs]
        if len(names) != len(self.output_names) or any(n not in o for n, o in zip(self.output_names, names)):
            raise ValueError(f"'{path}' has outputs {names}, its metadata names {self.output_names}.")
        self.request = self.compiled.create_infer_request()

    def run(self, image: np.ndarray) -> list:
        self.request.infer({0: image})
        # Copies: the request's output buffers are reused by the next image.
        return [np.array(self.request.get_output_tensor(i).data) for i in range(len(self.output_names))]
