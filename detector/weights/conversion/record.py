"""What every converter returns: one record of converted weights.

A converter knows its source's file layout and nothing else: it renames the tensors into this
project's names and says what model they belong to. Everything that is the same for every
source -- composing the config, re-initialising the class layers, the strict load check and the
write -- is done once, on this record, by detector/weights/conversion/assembly.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# What a record's weights are: a whole detector (model.weights=), a ResNet body (backbone.weights=),
# or a checkpoint of this project rewritten in another format (its own config, kept as it is).
KINDS = ("detector", "backbone", "checkpoint")


@dataclass(frozen=True)
class ConvertedWeights:
    """Weights of one file, in this project's names, and what they are.

    `backbone` and `model` hold the config fields that differ from conf/: `backbone["name"]` is
    the conf/backbone option (a ResNet conf/ has no file for is built as resnet50 with these
    fields), `model["name"]` the conf/model option (default faster_rcnn_fpn); nested dicts are
    nested keys. A checkpoint of this project (kind "checkpoint") carries its whole `config`
    instead, with its iteration and category ids, kept as they are.
    """

    state: dict[str, torch.Tensor]
    kind: str                          # one of KINDS
    source: str                        # the input, for messages ("model_final_280758.pkl")
    backbone: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None     # foreground classes the weights predict (None: a backbone)
    class_names: list[str] | None = None
    config: dict[str, Any] | None = None        # kind "checkpoint": its stored config, used as it is
    iteration: int = 0
    category_ids: list[int] | None = None       # label -> dataset category id, when the source records them
    usage: str = ""                    # how to use the output, logged after writing ("{output}": its path)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ConvertedWeights(kind={self.kind!r}) from {self.source}: expected one of {KINDS}.")
        if (self.kind == "checkpoint") != (self.config is not None):
            raise ValueError(f"ConvertedWeights from {self.source}: a stored `config` goes with kind 'checkpoint' "
                             "(and only with it); converted weights give `backbone` and `model` fields instead.")
