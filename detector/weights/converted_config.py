"""The configuration a converted checkpoint carries, so it loads with no other flags."""
from __future__ import annotations

from omegaconf import OmegaConf, open_dict

from detector.config import load_config
from detector.config_groups import has_group_option, load_group_option


def converted_config(backbone: dict, model: dict, num_classes: int | None, class_names: list[str] | None) -> dict:
    """A full resolved config: the defaults of conf/, with the backbone and model sections
    replaced by conf/backbone/<backbone name>.yaml and conf/model/<model name>.yaml (default
    faster_rcnn_fpn; not what a CPU schedule made of them) updated with `backbone` and `model`
    (nested dicts of the fields that differ)."""
    option = backbone.get("name")
    known = has_group_option("backbone", option)
    model_option = model.get("name", "faster_rcnn_fpn")
    cfg = load_config([f"backbone={option}"] if known else [])
    base_backbone = load_group_option("backbone", option if known else "resnet50")
    base_model = load_group_option("model", model_option)
    with open_dict(cfg):
        cfg.backbone = OmegaConf.merge(base_backbone, backbone)
        cfg.model = OmegaConf.merge(base_model, model)
        cfg.model.num_classes = num_classes
        cfg.model.class_names = class_names
    return OmegaConf.to_container(cfg, resolve=True)
