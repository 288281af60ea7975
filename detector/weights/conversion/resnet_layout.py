"""Reading a ResNet's architecture (depth, blocks, groups, width) off its weights."""
from __future__ import annotations

import re
from typing import Mapping

from detector.modeling.backbone.resnet import BLOCKS_PER_DEPTH


def infer_resnet_config(state: Mapping[str, object], prefix: str = "") -> dict:
    """Backbone config fields for a torchvision-named ResNet body whose keys start with
    `prefix` (e.g. "backbone.body."). Shapes are numpy arrays or tensors."""
    blocks = []
    for stage in range(1, 5):
        pattern = re.compile(re.escape(f"{prefix}layer{stage}.") + r"(\d+)\.")
        indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        if not indices:
            raise ValueError(f"no weights for stage layer{stage} under '{prefix}' (found e.g. "
                             f"{sorted(state)[:3]}); this is not a 4-stage ResNet body.")
        blocks.append(max(indices) + 1)
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state
    groups, width_per_group = 1, 64
    if bottleneck:
        conv2 = state[f"{prefix}layer1.0.conv2.weight"]
        width, in_per_group = int(conv2.shape[0]), int(conv2.shape[1])
        groups = width // in_per_group
        # Stage res2 has 64 planes: width = width_per_group * groups.
        width_per_group = width // groups
    depth = next((d for d, b in BLOCKS_PER_DEPTH.items() if tuple(blocks) == b and (d >= 50) == bottleneck), None)
    if depth is None:
        fields = {"depth": 50 if bottleneck else 18, "blocks_per_stage": blocks}
        name = f"resnet_custom_{'_'.join(map(str, blocks))}"
    else:
        fields = {"depth": depth, "blocks_per_stage": None}
        name = f"resnext{depth}_{groups}x{width_per_group}d" if groups > 1 else f"resnet{depth}"
    return {"name": name, **fields, "groups": groups, "width_per_group": width_per_group}
