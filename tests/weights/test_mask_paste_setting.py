"""model.roi_heads.mask_paste in checkpoints: a mask model saved before the key existed loads as it
always pasted (torchvision's way), and its config gains the key, so an override can change it."""
import pytest
import torch
from omegaconf import OmegaConf

from detector.modeling.build import build_model
from detector.weights.checkpoint_io import save_checkpoint
from detector.weights.config_upgrade import upgrade_config
from detector.weights.loading import load_model


def tiny_config(name: str):
    from detector.config import load_config

    return load_config([f"model={name}", "backbone=resnet18_narrow", "model.num_classes=2", "model.fpn.out_channels=16",
                        "model.roi_heads.fc_dim=32", "model.roi_heads.conv_dim=8"])


@pytest.mark.parametrize("name", ["mask_rcnn_fpn", "cascade_mask_rcnn_fpn"])
def test_a_mask_checkpoint_from_before_the_key_loads_pasting_the_torchvision_way(name, tmp_path):
    cfg = tiny_config(name)
    assert cfg.model.roi_heads.mask_paste == "torchvision"   # conf/'s default
    torch.manual_seed(0)
    model = build_model(cfg)
    stored = OmegaConf.to_container(cfg, resolve=True)
    del stored["model"]["roi_heads"]["mask_paste"]
    path = save_checkpoint({"model": model.state_dict(), "iteration": 1, "config": stored}, tmp_path / "old.pth")

    assert upgrade_config(stored)["model"]["roi_heads"]["mask_paste"] == "torchvision"
    loaded = load_model(path)
    assert loaded.roi_heads.mask_paste == "torchvision" and loaded.config.model.roi_heads.mask_paste == "torchvision"
    switched = load_model(path, overrides=["model.roi_heads.mask_paste=detectron2"])
    assert switched.roi_heads.mask_paste == "detectron2"


def test_box_models_get_no_mask_paste_key():
    stored = OmegaConf.to_container(tiny_config("faster_rcnn_fpn"), resolve=True)
    assert "mask_paste" not in upgrade_config(stored)["model"]["roi_heads"]
