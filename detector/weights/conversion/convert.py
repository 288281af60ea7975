"""Converting weight files into checkpoints of this project: the conversion entry point.

`convert_weights(source, input, output)` looks the source up in the registry (registry.py);
`convert_file` takes the source object itself (the published-names cache already holds it). It
has the source's converter turn the local file into one record, and hands the record to the one
assembly step (assembly.py: config, class layers, strict check, atomic write). Every output
carries its config, so `load_model(OUT)` (or `model.weights=OUT`) needs no other flag. An
output named `*.safetensors` is written as safetensors (tensors plus the config as JSON
metadata, no pickle), any other as a weights-only `.pth`.

Importing this module registers the built-in sources: torchvision (torchvision_source.py),
detectron2 (detectron2_source.py) and checkpoint (checkpoint_source.py: a checkpoint of this
project rewritten in the output's format, the way to export weights to safetensors and back).

Published names (`torchvision://...`) are not resolved here: conversion sits below the
published-names cache (detector/weights/zoo.py), which fetches the publisher's file and calls
this module, never the reverse.
"""
from __future__ import annotations

import os
from pathlib import Path

# Imported for their registration calls: the built-in sources, in the order --help lists them.
from detector.weights.conversion import torchvision_source  # noqa: F401  (isort: skip)
from detector.weights.conversion import detectron2_source  # noqa: F401  (isort: skip)
from detector.weights.conversion import checkpoint_source  # noqa: F401  (isort: skip)
from detector.weights.conversion.assembly import write_converted
from detector.weights.conversion.registry import (
    WeightsSource,
    registered_sources,
    source_of_published_name,
    weights_source,
)


def convert_weights(source: str, input_path: str | os.PathLike, output_path: str | os.PathLike,
                    num_classes: int | None = None, coco80: bool = False) -> Path:
    """Convert the local file `input_path`, a file of the registered weights source `source`,
    into a checkpoint of this project at `output_path`; returns its path. `num_classes` other
    than the weights' re-initialises the class layers; `coco80` is a torchvision option (keep
    the 80 used COCO classes)."""
    weights = weights_source(source)
    if source_of_published_name(input_path) is not None:
        raise ValueError(f"'{input_path}' is a published name: fetch it first (tools/convert_weights.py does, or "
                         "detector.weights.zoo.publisher_file(name, source) from Python), then convert the file.")
    return convert_file(weights, input_path, output_path, num_classes, coco80)


def convert_file(weights: WeightsSource, input_path: str | os.PathLike, output_path: str | os.PathLike,
                 num_classes: int | None = None, coco80: bool = False) -> Path:
    """convert_weights for a source already looked up: the published-names cache (zoo.py) holds
    the source of the name it fetched and hands it here, rather than its name to look up again."""
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input weights '{input_path}' do not exist.")
    if not weights.recognises(input_path):
        others = [s.name for s in registered_sources() if s is not weights and s.recognises(input_path)]
        hint = f"; it looks like a file of --source {' or '.join(others)}" if others else ""
        raise ValueError(f"'{input_path}' is not {weights.files}{hint}.")
    options = {"coco80": True} if coco80 else {}
    not_taken = [name for name in options if name not in weights.options]
    if not_taken:
        raise ValueError(f"--{not_taken[0].replace('_', '-')} does not apply to --source {weights.name}"
                         + (f" (its options: {', '.join(weights.options)})." if weights.options else "."))
    return write_converted(weights.convert(input_path, **options), output_path, num_classes)
