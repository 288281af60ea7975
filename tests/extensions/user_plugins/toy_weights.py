"""A user's own weights source, outside the library: `--source toy` and the name `toy://tiny`.

Its files (`*.toy`, written with torch.save) hold a Faster R-CNN's weights under names of their
own: this project's names with "/" for ".", under "toy/" (`toy/rpn/head/convs/0/weight`).
The converter renames them and says what model they are; the library composes the config,
checks the weights against it and writes the checkpoint. Registered by one call at the bottom:
importing this module (or declaring it under the entry-point group detector.weights_sources)
is all it takes. docs/extending.md, "A new weights source".
"""
from __future__ import annotations

from pathlib import Path

from detector.weights.conversion.record import ConvertedWeights
from detector.weights.conversion.registry import PublishedWeights, WeightsSource, register_source
from detector.weights.conversion.resnet_layout import infer_resnet_config
from detector.weights.state_dicts import read_state_dict

PREFIX = "toy/"


def recognises(path: Path) -> bool:
    return path.suffix == ".toy"


def convert(path: Path) -> ConvertedWeights:
    raw, _ = read_state_dict(path)   # the library's reader: weights-only, checksums checked
    foreign = [key for key in raw if not key.startswith(PREFIX)]
    if foreign:
        raise ValueError(f"'{path}' has keys outside {PREFIX}: {foreign[:3]}")
    state = {key[len(PREFIX):].replace("/", "."): value for key, value in raw.items()}
    return ConvertedWeights(
        state=state, kind="detector", source=str(path),
        backbone=infer_resnet_config(state, "backbone.body."),   # {"name": "resnet18", "depth": 18, ...}
        model={"fpn": {"out_channels": int(state["backbone.fpn.lateral_convs.0.0.weight"].shape[0])},
               "roi_heads": {"fc_dim": int(state["roi_heads.box_head.fc1.weight"].shape[0])}},
        num_classes=int(state["roi_heads.box_predictor.cls_score.weight"].shape[0]) - 1)


def published(rest: str) -> PublishedWeights | None:
    if rest != "tiny":
        return None
    return PublishedWeights(name="toy://tiny", url="https://example.invalid/toy/tiny.toy", kind="detector",
                            source="toy", hash_algorithm=None, hash_prefix=None, metric="none (random weights)")


register_source(WeightsSource(name="toy", convert=convert, recognises=recognises, files="a toy .toy file",
                              published=published, published_names=lambda: ["toy://tiny"]))
