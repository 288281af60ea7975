"""An OpenVINO IR run by OpenVINO's CPU plugin, at an explicit inference precision.

test.precision (fp32 | bf16) becomes INFERENCE_PRECISION_HINT (f32 | bf16), always set: left
unset, OpenVINO picks bf16 by itself on a CPU with AVX512-BF16 or AMX, so fp32 must be asked
for. What the compiled model actually uses is read back (a CPU without native bf16 runs f32
whatever the hint) and logged when it is not what was asked.

The file's graph takes any image size (a dynamic shape). OpenVINO runs a graph compiled for one
fixed size faster -- it plans memory and picks kernels once instead of at every image: 5-12% on
the bccd recipe's model, up to 7% on R50-FPN at 800 px (docs/deployment.md). A camera or a
dataset of one photo size sends the same size again and again, so an image size seen a second
time gets its own fixed-size compilation (a fraction of a second up to about 1 s for R50-FPN),
for at most STATIC_SIZES sizes per runner; every other size runs on the dynamic graph. The
number of compilations and the memory they hold stay bounded on a dataset of many sizes."""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from detector.deploy.exported_model import ExportedDetector
from detector.export.metadata import ExportMetadata
from detector.export.openvino_export import import_openvino

HINTS = {"fp32": "f32", "bf16": "bf16"}
STATIC_SIZES = 2          # image sizes per runner compiled for their fixed size
STATIC_AFTER_IMAGES = 2   # an image size is compiled for on its second image


class OpenVinoDetector(ExportedDetector):
    kind = "openvino"

    def __init__(self, path: str, metadata: ExportMetadata, precision: str = "fp32", threads: int | None = None,
                 model=None, logger: logging.Logger | None = None, static_sizes: int = STATIC_SIZES):
        super().__init__(path, metadata)
        ov = import_openvino()
        core = ov.Core()
        if model is None:
            model = core.read_model(str(path))
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.core, self.model, self.config = core, model, config
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
        self.static_sizes = static_sizes
        self.static_requests: dict[tuple[int, ...], object] = {}   # image shape -> request of its fixed-size graph
        self.images_of_shape: Counter = Counter()

    def request_for(self, shape: tuple[int, ...]):
        """The infer request an image of `shape` runs on: its fixed-size compilation where there is
        one or where this is the shape's second image and fewer than static_sizes exist; else the
        dynamic graph's."""
        if shape in self.static_requests:
            return self.static_requests[shape]
        if len(self.static_requests) >= self.static_sizes:   # no more compilations: no need to count
            return self.request
        self.images_of_shape[shape] += 1
        if self.images_of_shape[shape] < STATIC_AFTER_IMAGES:
            return self.request
        fixed = self.model.clone()
        fixed.reshape({0: list(shape)})
        request = self.core.compile_model(fixed, "CPU", self.config).create_infer_request()
        self.static_requests[shape] = request
        return request

    def run(self, image: np.ndarray) -> list:
        request = self.request_for(tuple(image.shape))
        request.infer({0: image})
        # Copies: the request's output buffers are reused by the next image.
        return [np.array(request.get_output_tensor(i).data) for i in range(len(self.output_names))]
