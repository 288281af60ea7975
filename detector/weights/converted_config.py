"""The configuration a converted checkpoint carries, so it loads with no other flags."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf, open_dict

from detector.config import CONFIG_DIR, load_config


def converted_config(backbone: dict, model: dict, num_classes: int | None, class_names: list[str] | None) -> dict:
    """A full resolved config: the defaults of conf/, with the backbone and model sections
    replaced by conf/model/faster_rcnn_fpn.yaml (not what a CPU schedule made of it) updated
    with `backbone` and `model` (nested dicts of the fields that differ)."""
    option = backbone.get("name")
    known = option is not None and (Path(CONFIG_DIR) / "backbone" / f"{option}.yaml").is_file()
    cfg = load_config([f"backbone={option}"] if known else [])
    base_backbone = OmegaConf.load(Path(CONFIG_DIR) / "backbone" / f"{option if known else 'resnet50'}.yaml")
    base_model = OmegaConf.load(Path(CONFIG_DIR) / "model" / "faster_rcnn_fpn.yaml")
    with open_dict(cfg):
        cfg.backbone = OmegaConf.merge(base_backbone, backbone)
        cfg.model = OmegaConf.merge(base_model, model)
        cfg.model.num_classes = num_classes
        cfg.model.class_names = class_names
    return OmegaConf.to_container(cfg, resolve=True)
