"""From the config tree to modules: one explicit builder per component.

`build_model(cfg)` reads `cfg.backbone` and `cfg.model` (conf/backbone/*.yaml and
conf/model/*.yaml) and nothing else. `load_model(path)` rebuilds the model
from the config a checkpoint carries.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from detector.config import CONFIG_DIR
from detector.modeling.anchor_generator import AnchorGenerator
from detector.modeling.backbone.fpn import FPN, BackboneWithFPN
from detector.modeling.backbone.resnet import ResNet
from detector.modeling.box_coder import BoxCoder
from detector.modeling.faster_rcnn import FasterRCNN
from detector.modeling.matcher import Matcher
from detector.modeling.poolers import MultiLevelRoIAlign
from detector.modeling.preprocessing import ImagePreprocessor
from detector.modeling.roi_heads import BoxPredictor, ConvFCBoxHead, FCBoxHead, RoIHeads
from detector.modeling.rpn import RPN, RPNHead
from detector.modeling.sampler import BalancedSampler
from detector.weights.state_dicts import load_state_dict_strict, read_state_dict, strip_prefix
from detector.weights.zoo import resolve_weights

logger = logging.getLogger(__name__)

CONF_DIR = CONFIG_DIR  # conf/, wherever the package is installed


def build_resnet(backbone_cfg: DictConfig, fold_norms: bool = True) -> ResNet:
    """The ResNet body alone (also what a classifier builds on)."""
    return ResNet(
        depth=backbone_cfg.depth,
        blocks_per_stage=backbone_cfg.blocks_per_stage,
        groups=backbone_cfg.groups,
        width_per_group=backbone_cfg.width_per_group,
        norm=backbone_cfg.norm,
        freeze_at=backbone_cfg.freeze_at,
        out_features=list(backbone_cfg.out_features),
        stride_in_1x1=backbone_cfg.stride_in_1x1,
        base_channels=backbone_cfg.get("base_channels", 64),
        fold_norms=fold_norms,
    )


def build_backbone(cfg: DictConfig) -> BackboneWithFPN:
    body = build_resnet(cfg.backbone, fold_norms=bool(cfg.model.get("fold_norms", True)))
    if cfg.backbone.weights:
        load_backbone_weights(body, cfg.backbone.weights)
    fpn = FPN(
        in_channels=[body.out_channels[name] for name in body.out_features],
        in_strides=[body.strides[name] for name in body.out_features],
        out_channels=cfg.model.fpn.out_channels,
        norm=cfg.model.fpn.norm,
        fold_norms=bool(cfg.model.get("fold_norms", True)),
    )
    return BackboneWithFPN(body, fpn)


def build_rpn(cfg: DictConfig, in_channels: int) -> RPN:
    rpn_cfg, anchor_cfg = cfg.model.rpn, cfg.model.anchor_generator
    anchors = AnchorGenerator(
        sizes=list(anchor_cfg.sizes),
        aspect_ratios=list(anchor_cfg.aspect_ratios),
        round_anchors=anchor_cfg.round_anchors,
        strides=None if anchor_cfg.strides is None else list(anchor_cfg.strides),
    )
    return RPN(
        head=RPNHead(in_channels, anchors.num_anchors_per_location, rpn_cfg.conv_depth),
        anchor_generator=anchors,
        box_coder=BoxCoder(list(rpn_cfg.bbox_reg_weights)),
        matcher=Matcher(rpn_cfg.fg_iou_thresh, rpn_cfg.bg_iou_thresh, allow_low_quality_matches=True),
        sampler=BalancedSampler(rpn_cfg.batch_size_per_image, rpn_cfg.positive_fraction),
        pre_nms_topk={"train": rpn_cfg.pre_nms_topk_train, "test": rpn_cfg.pre_nms_topk_test},
        post_nms_topk={"train": rpn_cfg.post_nms_topk_train, "test": rpn_cfg.post_nms_topk_test},
        nms_thresh=rpn_cfg.nms_thresh,
        score_thresh=rpn_cfg.score_thresh,
        min_box_size=rpn_cfg.min_box_size,
        box_loss=rpn_cfg.box_loss,
        smooth_l1_beta=rpn_cfg.smooth_l1_beta,
    )


def build_roi_heads(cfg: DictConfig, in_channels: int, strides: list[int], num_classes: int) -> RoIHeads:
    roi_cfg = cfg.model.roi_heads
    resolution = roi_cfg.pooler_resolution
    if roi_cfg.box_head == "fc":
        box_head: nn.Module = FCBoxHead(in_channels, resolution, roi_cfg.fc_dim)
    elif roi_cfg.box_head == "conv4fc":
        box_head = ConvFCBoxHead(in_channels, resolution, roi_cfg.conv_dim, roi_cfg.fc_dim, norm=roi_cfg.conv_norm,
                                 fold_norms=bool(cfg.model.get("fold_norms", True)))
    else:
        raise ValueError(f"model.roi_heads.box_head='{roi_cfg.box_head}'; valid choices: fc, conv4fc.")
    return RoIHeads(
        pooler=MultiLevelRoIAlign(resolution, strides, roi_cfg.pooler_sampling_ratio, roi_cfg.pooler_aligned,
                                  roi_cfg.canonical_box_size, roi_cfg.canonical_level),
        box_head=box_head,
        box_predictor=BoxPredictor(box_head.out_dim, num_classes, roi_cfg.predictor_layout),
        box_coder=BoxCoder(list(roi_cfg.bbox_reg_weights)),
        matcher=Matcher(roi_cfg.fg_iou_thresh, roi_cfg.bg_iou_thresh, allow_low_quality_matches=False),
        sampler=BalancedSampler(roi_cfg.batch_size_per_image, roi_cfg.positive_fraction),
        score_thresh=roi_cfg.score_thresh,
        nms_thresh=roi_cfg.nms_thresh,
        detections_per_img=roi_cfg.detections_per_img,
        min_box_size=roi_cfg.min_box_size,
        box_loss=roi_cfg.box_loss,
        smooth_l1_beta=roi_cfg.smooth_l1_beta,
    )


def build_preprocessor(cfg: DictConfig) -> ImagePreprocessor:
    input_cfg = cfg.model.input
    return ImagePreprocessor(
        pixel_mean=list(input_cfg.pixel_mean),
        pixel_std=list(input_cfg.pixel_std),
        input_format=input_cfg.format,
        min_size_test=input_cfg.min_size_test,
        max_size_test=input_cfg.max_size_test,
        size_divisibility=input_cfg.size_divisibility,
    )


def resolve_num_classes(cfg: DictConfig) -> int:
    """cfg.model.num_classes, or the dataset's class count (then also sets class_names)."""
    if cfg.model.num_classes is not None:
        return int(cfg.model.num_classes)
    try:
        from detector.data import class_names
    except ImportError:
        class_names = None
    if class_names is None:
        raise ValueError("model.num_classes is null and detector.data.class_names is not available to read the "
                         "classes from the dataset; set model.num_classes=K.")
    names = list(class_names(cfg))
    with open_dict(cfg):
        cfg.model.num_classes = len(names)
        cfg.model.class_names = names
    return len(names)


def build_model(cfg: DictConfig) -> FasterRCNN:
    """Faster R-CNN from `cfg.backbone` and `cfg.model`; loads `cfg.model.weights` if set."""
    num_classes = resolve_num_classes(cfg)
    backbone = build_backbone(cfg)
    if len(cfg.model.anchor_generator.sizes) != len(backbone.strides):
        raise ValueError(f"model.anchor_generator.sizes={list(cfg.model.anchor_generator.sizes)} needs one size per "
                         f"FPN level: {len(backbone.strides)} levels (strides {backbone.strides}) come from "
                         f"backbone.out_features={list(cfg.backbone.out_features)} plus the pooled top level.")
    levels = [f"p{name[len('res'):]}" for name in backbone.body.out_features]
    pooled_strides = backbone.strides[: len(levels)]
    model = FasterRCNN(
        backbone=backbone,
        rpn=build_rpn(cfg, backbone.out_channels),
        roi_heads=build_roi_heads(cfg, backbone.out_channels, pooled_strides, num_classes),
        preprocessor=build_preprocessor(cfg),
        num_classes=num_classes,
        pooled_levels=levels,
        channels_last=bool(cfg.model.get("channels_last", False)),
    )
    if cfg.model.weights:
        load_weights_into(model, cfg.model.weights)
    return model


def load_weights_into(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a checkpoint of this project (or a .safetensors file) into `model`, strictly.
    Returns the whole checkpoint dict (e.g. for its "iteration"). `path` may be a published
    name (torchvision://..., detectron2://...; see detector/weights/zoo.py)."""
    state, checkpoint = read_state_dict(resolve_weights(path, expect="detector"))
    load_state_dict_strict(model, state, source=str(path))
    logger.info("Loaded weights from %s", path)
    return checkpoint


def load_backbone_weights(body: ResNet, path: str | os.PathLike) -> None:
    """ImageNet weights for the ResNet body: a torchvision classification state dict, a
    classifier checkpoint of this project, or a backbone checkpoint written by
    tools/convert_weights.py. The classifier's `fc.*` and stages the body does not build
    (when out_features stops early) are set aside; everything else must match exactly.
    `path` may be a published name, e.g. torchvision://resnet50."""
    state, _ = read_state_dict(resolve_weights(path, expect="backbone"))
    for prefix in ("module.", "backbone.body.", "body.", "backbone."):
        state = strip_prefix(state, prefix)
    built = body.built_stage_prefixes()
    unused_stage = tuple(f"layer{i}." for i in range(1, 5) if f"layer{i}." not in built)
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not (unused_stage and k.startswith(unused_stage))}
    load_state_dict_strict(body, state, source=str(path))
    logger.info("Loaded backbone weights from %s", path)


def _base_section(name: str, option: str | None, fallback: str) -> DictConfig:
    from detector.config_groups import has_group_option, load_group_option

    return load_group_option(name, str(option) if has_group_option(name, option) else fallback)


def config_from_checkpoint(checkpoint: dict, source: str, overrides: Iterable[str] = ()) -> DictConfig:
    """The checkpoint's own config, with keys added to conf/ since it was written filled
    from conf/ defaults, then `overrides` ("key=value") applied. Unknown keys are errors."""
    if "config" not in checkpoint or not isinstance(checkpoint["config"], dict):
        raise ValueError(f"Checkpoint '{source}' carries no 'config'; it cannot be rebuilt on its own. "
                         "Build the model with build_model(cfg) and load_weights_into(model, path), or convert "
                         "foreign weights with tools/convert_weights.py.")
    cfg = OmegaConf.create(checkpoint["config"])
    for key in ("backbone", "model"):
        if key not in cfg:
            raise ValueError(f"Checkpoint '{source}' config has no '{key}' section.")
    base_model = _base_section("model", cfg.model.get("name"), "faster_rcnn_fpn")
    base_backbone = _base_section("backbone", cfg.backbone.get("name"), "resnet50")
    with open_dict(cfg):
        cfg.model = OmegaConf.merge(base_model, cfg.model)
        cfg.backbone = OmegaConf.merge(base_backbone, cfg.backbone)
    OmegaConf.set_struct(cfg, True)
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override '{item}' must look like key=value (e.g. model.roi_heads.score_thresh=0.0).")
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        except Exception as error:
            raise ValueError(f"Cannot apply overrides {overrides} to the config of '{source}': {error}") from None
    return cfg


def load_model(path: str | os.PathLike, overrides: Iterable[str] = (), device: str = "cpu") -> FasterRCNN:
    """Rebuild the model from the config a checkpoint carries, load its weights strictly and
    return it in eval mode. `overrides` are "key=value" strings, e.g.
    ["model.roi_heads.score_thresh=0.0"]. `path` may be a published name, e.g.
    torchvision://fasterrcnn_resnet50_fpn (fetched and converted once, then cached)."""
    from detector.weights.safetensors_io import read_checkpoint_with_config

    checkpoint = read_checkpoint_with_config(resolve_weights(path, expect="detector"))
    cfg = config_from_checkpoint(checkpoint, str(path), overrides)
    with open_dict(cfg):
        # The weights come from this file; do not load any other.
        cfg.model.weights = None
        cfg.backbone.weights = None
    model = build_model(cfg)
    load_state_dict_strict(model, checkpoint["model"], source=str(path))
    model.config = cfg
    return model.to(device).eval()
