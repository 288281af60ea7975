"""NNCF post-training quantization of the OpenVINO model: int8 weights and activations in the
network's feature layers, float everywhere else.

What is quantized: the inputs (activations) and weights of the convolutions and fully-connected
layers of the backbone, FPN, RPN head and RoI heads (box, mask, keypoint heads and predictors;
a one-stage model's head), plus the FPN's additions and upsampling between them. That is where
the time goes, and where int8 arithmetic costs little accuracy: each tensor is a feature map
whose range the calibration images measure.

What stays float (FLOAT_SCOPE): every node outside those layers -- the image resize and
normalisation, anchor generation, box decoding (exp of the deltas, scaling by the anchor
sides), clipping, the RoI pooler's level assignment (the square root of box areas), RoIAlign's
sampling coordinates, score thresholds and NMS, and the mask pasting. These compute in pixels,
or compare scores with thresholds: a coordinate rounded to 1/256 of its range moves a box by
pixels, and NNCF would otherwise put quantizers on some of them (it treats any Multiply or Add of
two tensors as quantizable). The node names come from the ONNX export's module scopes
(`/backbone/...`, `/rpn/head/...`, `/roi_heads/box_head/...`), so one name pattern keeps them.

Plain post-training quantization (NNCF's PERFORMANCE preset: symmetric int8, per-channel
weights) with NNCF's full bias correction (BIAS_CORRECTION["full"]): each layer's bias corrected
for the shift quantization put into its output, measured layer by layer on the calibration
images. On a bccd recipe model it kept 0.602 of the fp32 0.605 AP, where the fast correction
(one pass) kept 0.595 -- close to the 0.010 allowed. It runs the network layer by layer, so it
takes longer: 85 s instead of 18 s on the bccd model with 100 images, about 20 s more per
calibration image for R50-FPN at 800 px; the graph and its speed are the same (docs/deployment.md).
"fast" is there for large models and many images. nncf.quantize_with_accuracy_control is not
needed for that margin.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

# A node is quantized only inside these module scopes (names the ONNX exporter gives them).
FEATURE_SCOPES = (r"/backbone/", r"/rpn/head/", r"/head/", r"/roi_heads/[a-z]+_(?:head|predictor)[./]")
# NNCF matches ignored-scope patterns with re.match: every name NOT starting with a feature scope.
FLOAT_PATTERN = r"^(?!" + "|".join(FEATURE_SCOPES) + ")"
# Operators that must never be quantized, whatever their name (NNCF does not quantize them today;
# listed so that a future NNCF version cannot start to).
FLOAT_TYPES = ("NonMaxSuppression", "ROIAlign", "TopK", "Exp", "Sqrt", "Sigmoid", "Softmax")
# --bias-correction: name -> nncf.quantize's fast_bias_correction.
BIAS_CORRECTION = {"full": False, "fast": True}
DEFAULT_BIAS_CORRECTION = "full"


def import_nncf():
    try:
        import nncf
    except ModuleNotFoundError:
        raise ImportError("--int8 needs the 'nncf' package (post-training quantization): pip install -e '.[deploy]' "
                          "(openvino, nncf, onnx, onnxruntime).") from None
    return nncf


def float_scope():
    """The nncf.IgnoredScope that keeps box arithmetic, RoIAlign, NMS and pre-processing float."""
    nncf = import_nncf()
    # validate=False: a box model has no mask scope, a one-stage model no RoI heads; a rule that
    # matches nothing in a given model is expected, not an error.
    return nncf.IgnoredScope(patterns=[FLOAT_PATTERN], types=list(FLOAT_TYPES), validate=False)


def quantize_openvino(model, images: Sequence[torch.Tensor], log: Callable[[str], None] = print,
                      bias_correction: str = DEFAULT_BIAS_CORRECTION):
    """The int8 `openvino.Model` of `model` (float32, as openvino_export.openvino_model makes it),
    calibrated on `images` (each float32 [3, H, W] in [0, 1], the graph's input), with the bias
    correction named (a key of BIAS_CORRECTION)."""
    nncf = import_nncf()
    if not images:
        raise ValueError("int8 quantization needs at least one calibration image.")
    if bias_correction not in BIAS_CORRECTION:
        raise ValueError(f"bias correction {bias_correction!r}: use one of {', '.join(BIAS_CORRECTION)}.")
    dataset = nncf.Dataset(list(images), lambda image: np.ascontiguousarray(image.numpy(), dtype=np.float32))
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)   # one INFO line per node it leaves out
    try:
        hint = ("; --bias-correction fast quantizes about 4x sooner for a little more AP lost"
                if bias_correction == "full" else "")
        log(f"[int8] calibrating on {len(images)} images (NNCF post-training quantization, {bias_correction} "
            f"bias correction{hint}) ...")
        return nncf.quantize(model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.PERFORMANCE,
                             ignored_scope=float_scope(), fast_bias_correction=BIAS_CORRECTION[bias_correction])
    finally:
        nncf_log.setLevel(level)


def quantized_node_types(model) -> dict[str, list[str]]:
    """{operator type: names of the nodes} that read a FakeQuantize output, i.e. run on int8
    values: what a test (and a curious user) checks the float scope against."""
    found: dict[str, list[str]] = {}
    for node in model.get_ordered_ops():
        if node.get_type_name() != "FakeQuantize":
            continue
        for output in node.outputs():
            for target in output.get_target_inputs():
                consumer = target.get_node()
                found.setdefault(consumer.get_type_name(), []).append(consumer.get_friendly_name())
    return found
