"""The `checkpoint` source: a checkpoint of this project, rewritten in the output's format.

`--source checkpoint --input model_final.pth --output model.safetensors` exports weights to
safetensors, and the reverse imports them back. The file is read by the one reader and kept as
it is: its state dict, its stored config (as written, not upgraded), iteration and class ids.
It publishes no names.
"""
from __future__ import annotations

from pathlib import Path

from detector.weights.checkpoint_io import read_checkpoint
from detector.weights.conversion.record import ConvertedWeights
from detector.weights.conversion.registry import WeightsSource, register_source

SUFFIXES = (".pth", ".pt", ".safetensors")


def recognises(path: Path) -> bool:
    return path.suffix in SUFFIXES


def convert(path: Path) -> ConvertedWeights:
    record = read_checkpoint(path)
    if record.stored_config is None:
        raise ValueError(f"'{path}' carries no config: it is not a checkpoint of this project "
                         "(use --source torchvision or detectron2 for foreign weights).")
    return ConvertedWeights(state=record.state, kind="checkpoint", source=str(path), config=record.stored_config,
                            iteration=record.iteration or 0, category_ids=record.category_ids)


register_source(WeightsSource(
    name="checkpoint", convert=convert, recognises=recognises,
    files="a checkpoint of this project (.pth or .safetensors, carrying its config)"))
