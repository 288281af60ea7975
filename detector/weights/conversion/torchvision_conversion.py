"""torchvision weights -> this project's parameter names.

Detection: a `fasterrcnn_resnet50_fpn` (v1) or `fasterrcnn_resnet50_fpn_v2` state dict, or
any torchvision `FasterRCNN` built on `resnet_fpn_backbone` (the depth is read off the
weights). v1 and v2 are told apart by their keys: v2's box head is numbered
(`roi_heads.box_head.0.0.weight`, four conv + BatchNorm blocks and one Linear) where v1's has
`fc6`/`fc7`, and v2's FPN blocks carry a BatchNorm (`inner_blocks.i.1.*`). A mask branch
(`roi_heads.mask_head.*`, `roi_heads.mask_predictor.*`: `maskrcnn_resnet50_fpn` and `_v2`, or any
torchvision `MaskRCNN` on these backbones) makes it Mask R-CNN (model=mask_rcnn_fpn, or
mask_rcnn_fpn_v2), whose mask modules are laid out like torchvision's, so they keep their names.
A keypoint branch (`roi_heads.keypoint_head.*`, `roi_heads.keypoint_predictor.*`:
`keypointrcnn_resnet50_fpn`) makes it Keypoint R-CNN (model=keypoint_rcnn_fpn), laid out like
torchvision's too.
Classification: an ImageNet ResNet/ResNeXt state dict, which becomes backbone weights.

`converted_torchvision` is the converter: a torchvision state dict in, one ConvertedWeights
record out (the torchvision source, torchvision_source.py, reads the file and registers it);
`checkpoint_from_torchvision` is that record assembled into a checkpoint of this project.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from detector.weights.conversion.assembly import assemble_checkpoint
from detector.weights.conversion.coco_classes import COCO_IDS, COCO_NAMES, names_by_category_id
from detector.weights.conversion.head_layout import keypoint_fields, mask_head_layout, norm_kind
from detector.weights.conversion.record import ConvertedWeights
from detector.weights.conversion.resnet_layout import infer_resnet_config
from detector.weights.conversion.torchvision_dense import convert_torchvision_dense, is_torchvision_dense

# What torchvision's detection models do, expressed in this project's config.
TORCHVISION_DETECTION_SETTINGS = {
    # Pretrained torchvision detectors use FrozenBatchNorm2d and train layer2..layer4 only.
    "backbone": {"norm": "frozen_bn", "freeze_at": 2, "stride_in_1x1": False},
    "model": {},   # conf/model/faster_rcnn_fpn.yaml's defaults are torchvision's
}
# fasterrcnn_resnet50_fpn_v2 builds its ResNet with plain BatchNorm2d (also when pretrained),
# still training layer2..layer4 only; conf/model/faster_rcnn_fpn_v2.yaml holds its heads.
TORCHVISION_V2_SETTINGS = {
    "backbone": {"norm": "bn", "freeze_at": 2, "stride_in_1x1": False},
    "model": {"name": "faster_rcnn_fpn_v2"},
}

# Modules laid out here exactly as in torchvision: their keys are kept as they are. (Mask R-CNN's
# mask blocks too: conv i.0, and v2's BatchNorm i.1.)
_KEPT = re.compile(r"^(backbone\.body\.|roi_heads\.box_predictor\.|roi_heads\.mask_head\.\d+\.[01]\."
                   r"|roi_heads\.mask_predictor\.(conv5_mask|mask_fcn_logits)\."
                   r"|roi_heads\.keypoint_head\.\d+\.(weight|bias)$|roi_heads\.keypoint_predictor\.kps_score_lowres\.)")
# The others: torchvision's name (a pattern) -> this project's (its substitution); first match wins.
_RENAMED = {
    # FPN blocks: the conv (.0) and, in v2, its BatchNorm (.1).
    r"^backbone\.fpn\.inner_blocks\.(\d+)\.([01])\.": r"backbone.fpn.lateral_convs.\1.\2.",
    r"^backbone\.fpn\.layer_blocks\.(\d+)\.([01])\.": r"backbone.fpn.output_convs.\1.\2.",
    r"^rpn\.head\.conv\.(\d+)\.0\.": r"rpn.head.convs.\1.",
    r"^rpn\.head\.cls_logits\.": "rpn.head.objectness.",
    r"^rpn\.head\.bbox_pred\.": "rpn.head.deltas.",
    r"^roi_heads\.box_head\.fc6\.": "roi_heads.box_head.fc1.",
    r"^roi_heads\.box_head\.fc7\.": "roi_heads.box_head.fc2.",
    # Releases before Conv2dNormActivation wrapped these convs; the published
    # maskrcnn_resnet50_fpn file among them, whose mask convs are mask_fcn1..4.
    r"^backbone\.fpn\.inner_blocks\.(\d+)\.(weight|bias)$": r"backbone.fpn.lateral_convs.\1.0.\2",
    r"^backbone\.fpn\.layer_blocks\.(\d+)\.(weight|bias)$": r"backbone.fpn.output_convs.\1.0.\2",
    r"^rpn\.head\.conv\.(weight|bias)$": r"rpn.head.convs.0.\1",
    r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$":
        lambda m: f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}",
}


def is_torchvision_detection(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("backbone.body.") for k in state) and any(k.startswith("rpn.head.") for k in state)


def is_torchvision_classification(state: Mapping[str, torch.Tensor]) -> bool:
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state


def _conv_box_head_renames(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """torchvision's FastRCNNConvFCHead (a Sequential: conv blocks `i.0` conv, `i.1` norm, then
    Flatten, then one Linear) -> ConvFCBoxHead (`convs` holding conv, [norm,] ReLU in turn; `fc1`)."""
    prefix = "roi_heads.box_head."
    blocks = sorted({int(k.split(".")[2]) for k in state if re.match(r"^roi_heads\.box_head\.\d+\.\d+\.", k)})
    linears = sorted({int(k.split(".")[2]) for k in state if re.match(r"^roi_heads\.box_head\.\d+\.(weight|bias)$", k)})
    if blocks != list(range(4)) or linears != [len(blocks) + 1]:
        raise ValueError(f"torchvision box head with conv blocks {blocks} and Linear layers at {linears}: only the "
                         "4conv1fc head of fasterrcnn_resnet50_fpn_v2 (blocks 0..3, one Linear at 5) is supported.")
    has_norm = f"{prefix}0.1.weight" in state
    if has_norm and f"{prefix}0.1.running_mean" not in state:
        raise ValueError("the torchvision box head's norm has no running statistics: only BatchNorm is supported.")
    step = 3 if has_norm else 2   # conv, [norm,] ReLU
    renames = {}
    for key in state:
        match = re.match(r"^roi_heads\.box_head\.(\d+)\.(\d+)\.(.+)$", key)
        if match:
            block, part, name = int(match.group(1)), int(match.group(2)), match.group(3)
            renames[key] = f"{prefix}convs.{block * step + part}.{name}"
        elif re.match(r"^roi_heads\.box_head\.\d+\.(weight|bias)$", key):
            renames[key] = f"{prefix}fc1.{key.rsplit('.', 1)[1]}"
    return renames


def rename_torchvision_detection(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    box_head = _conv_box_head_renames(state) if is_torchvision_v2(state) else {}
    renamed = {}
    for key, value in state.items():
        if key in box_head:
            renamed[box_head[key]] = value
            continue
        name = _our_name(key)
        if name is None:
            raise ValueError(f"unexpected key '{key}' in the torchvision detection state dict: only the Faster/Mask "
                             "R-CNN ResNet-FPN layouts are supported (backbone.body/fpn, rpn.head, box_predictor, "
                             "roi_heads.box_head fc6/fc7 (v1) or four conv blocks and a Linear (v2), and "
                             "roi_heads.mask_head / mask_predictor).")
        renamed[name] = value
    return renamed


def _our_name(key: str) -> str | None:
    if _KEPT.match(key):
        return key
    for pattern, replacement in _RENAMED.items():
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def is_torchvision_v2(state: Mapping[str, torch.Tensor]) -> bool:
    """fasterrcnn_resnet50_fpn_v2's layout: a numbered conv box head instead of fc6/fc7."""
    return "roi_heads.box_head.0.0.weight" in state


def has_mask_branch(state: Mapping[str, torch.Tensor]) -> bool:
    """Mask R-CNN's layout: a mask predictor next to the box predictor."""
    return "roi_heads.mask_predictor.mask_fcn_logits.weight" in state


def has_keypoint_branch(state: Mapping[str, torch.Tensor]) -> bool:
    """Keypoint R-CNN's layout: a keypoint predictor next to the box predictor."""
    return "roi_heads.keypoint_predictor.kps_score_lowres.weight" in state


def _mask_fields(renamed: Mapping[str, torch.Tensor], num_outputs: int) -> dict:
    """model.roi_heads fields of the mask branch, read off the (renamed) weights."""
    layout = mask_head_layout(renamed, "torchvision")
    if layout.norm == "gn":
        raise ValueError("the torchvision mask head's norm has no running statistics: only BatchNorm is supported.")
    if layout.outputs != num_outputs:
        raise ValueError(f"torchvision mask predictor has {layout.outputs} outputs but the box predictor "
                         f"{num_outputs}: only class-specific masks (one per class, background included) are supported.")
    # torchvision's mask convs are 3x3 with dilation 1, conf/model's default.
    return layout.fields()


def _fpn_norm(renamed: Mapping[str, torch.Tensor]) -> str:
    norm = norm_kind(renamed, "backbone.fpn.lateral_convs.0.1.")
    if norm == "gn":
        raise ValueError("the torchvision FPN's norm has no running statistics: only BatchNorm is supported.")
    return norm


def convert_torchvision_detection(state: Mapping[str, torch.Tensor], coco80: bool = False):
    """Returns (state dict, backbone fields, model fields, num_classes, class_names)."""
    v2 = is_torchvision_v2(state)
    if not v2 and "roi_heads.box_head.fc6.weight" not in state:
        raise ValueError("torchvision box head not recognised: expected fc6/fc7 (fasterrcnn_resnet50_fpn) or "
                         "numbered conv blocks (fasterrcnn_resnet50_fpn_v2, roi_heads.box_head.0.0.weight).")
    settings = TORCHVISION_V2_SETTINGS if v2 else TORCHVISION_DETECTION_SETTINGS
    masks = has_mask_branch(state)
    keypoints = has_keypoint_branch(state)
    backbone = {**infer_resnet_config(state, "backbone.body."), **settings["backbone"]}
    renamed = {k: v for k, v in rename_torchvision_detection(state).items() if not k.endswith("num_batches_tracked")}
    num_outputs = int(renamed["roi_heads.box_predictor.cls_score.weight"].shape[0])
    num_classes = num_outputs - 1
    model = {
        **settings["model"],
        # maskrcnn_resnet50_fpn(_v2) is fasterrcnn_resnet50_fpn(_v2) plus the mask branch.
        **({"name": "mask_rcnn_fpn_v2" if v2 else "mask_rcnn_fpn"} if masks else {}),
        **({"name": "keypoint_rcnn_fpn"} if keypoints else {}),
        "fpn": {"out_channels": int(renamed["backbone.fpn.lateral_convs.0.0.weight"].shape[0]),
                "norm": _fpn_norm(renamed)},
        "rpn": {"conv_depth": len({k.split(".")[3] for k in renamed if k.startswith("rpn.head.convs.")})},
        "roi_heads": {"fc_dim": int(renamed["roi_heads.box_head.fc1.weight"].shape[0])},
    }
    if v2:
        # model=faster_rcnn_fpn_v2's box_head node is the conv head; its width and norm read these keys.
        model["roi_heads"].update(conv_dim=int(renamed["roi_heads.box_head.convs.0.weight"].shape[0]),
                                  conv_norm="bn" if "roi_heads.box_head.0.1.weight" in state else "")
    if masks:
        model["roi_heads"].update(_mask_fields(renamed, num_outputs))
    if keypoints:
        if v2 or masks:
            raise ValueError("torchvision keypoint branch next to a v2 box head or a mask branch: only "
                             "keypointrcnn_resnet50_fpn's layout (v1 heads plus the keypoint branch) is supported.")
        model["roi_heads"].update(keypoint_fields(renamed))
    names = names_by_category_id(num_classes) if num_classes == 90 or (keypoints and num_classes == 1) else None
    if coco80:
        if num_classes != 90:
            raise ValueError(f"--coco80 needs torchvision's COCO layout (91 class outputs), got {num_outputs}.")
        # Keep background and the 80 used category ids, in id order: labels become 1..80.
        rows = torch.tensor([0] + COCO_IDS)
        box_rows = (rows[:, None] * 4 + torch.arange(4)).reshape(-1)
        for name in ("weight", "bias"):
            renamed[f"roi_heads.box_predictor.cls_score.{name}"] = renamed[f"roi_heads.box_predictor.cls_score.{name}"][rows]
            renamed[f"roi_heads.box_predictor.bbox_pred.{name}"] = renamed[f"roi_heads.box_predictor.bbox_pred.{name}"][box_rows]
            if masks:   # one mask channel per class output, background included
                key = f"roi_heads.mask_predictor.mask_fcn_logits.{name}"
                renamed[key] = renamed[key][rows]
        num_classes, names = 80, list(COCO_NAMES)
    return renamed, backbone, model, num_classes, names


def convert_torchvision_classification(state: Mapping[str, torch.Tensor]):
    """ImageNet ResNet/ResNeXt -> (backbone state dict without fc, backbone fields)."""
    backbone = {**infer_resnet_config(state, ""), "stride_in_1x1": False}
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return body, backbone


def converted_torchvision(state: Mapping[str, torch.Tensor], coco80: bool = False,
                          source: str = "torchvision state dict") -> ConvertedWeights:
    """One record of a torchvision state dict, told apart by its keys:

    - Faster R-CNN, v1 (`fasterrcnn_resnet50_fpn`) or v2 (`fasterrcnn_resnet50_fpn_v2`), or
      Mask R-CNN (`maskrcnn_resnet50_fpn`, `maskrcnn_resnet50_fpn_v2`): a detector whose model
      option (`model.name`: faster_rcnn_fpn, faster_rcnn_fpn_v2, mask_rcnn_fpn or
      mask_rcnn_fpn_v2) and backbone are read off the weights; `coco80` keeps only the 80 used
      COCO category ids, as labels 1..80.
    - ResNet/ResNeXt ImageNet classifier: backbone weights (no fc), for `backbone.weights=`.

    `source` names the weights in error messages. Raises ValueError for any other layout."""
    if is_torchvision_dense(state):   # RetinaNet (v1, v2) or FCOS: torchvision_dense.py
        converted, backbone, model, num_classes, names = convert_torchvision_dense(state, coco80=coco80)
        return ConvertedWeights(state=converted, kind="detector", source=source, backbone=backbone, model=model,
                                num_classes=num_classes, class_names=names)
    if is_torchvision_detection(state):
        converted, backbone, model, num_classes, names = convert_torchvision_detection(state, coco80=coco80)
        return ConvertedWeights(state=converted, kind="detector", source=source, backbone=backbone, model=model,
                                num_classes=num_classes, class_names=names)
    if is_torchvision_classification(state):
        body, backbone = convert_torchvision_classification(state)
        return ConvertedWeights(state=body, kind="backbone", source=source, backbone=backbone,
                                usage=f"Backbone {backbone['name']}: use it with backbone.weights={{output}}")
    raise ValueError(f"'{source}' is neither a torchvision Faster/Mask R-CNN state dict (keys backbone.body.*, rpn.head.*) "
                     "nor a torchvision ResNet classification state dict (keys conv1.*, layer1.*).")


def checkpoint_from_torchvision(state: Mapping[str, torch.Tensor], num_classes: int | None = None,
                                coco80: bool = False, source: str = "torchvision state dict") -> dict:
    """A checkpoint of this project from a torchvision state dict, ready for save_checkpoint
    or for load_model once written: the record of `converted_torchvision`, assembled
    (detector/weights/conversion/assembly.py: the config that rebuilds the model, the weights
    loaded strictly into it, "category_ids" for COCO models). `num_classes` other than the
    weights' re-initializes the class layers (fine-tuning)."""
    return assemble_checkpoint(converted_torchvision(state, coco80, source), num_classes)
