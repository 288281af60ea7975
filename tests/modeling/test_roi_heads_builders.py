"""The RoI-heads builders follow one convention, and checkpoints that stored a builder's old path
still load: the plain family's builder moved from modeling/build.py to modeling/roi_heads.py,
Mask R-CNN's from modeling/mask_head.py to modeling/mask_roi_heads.py."""
import inspect
from pathlib import Path

import pytest
import torch
from hydra.utils import get_object
from omegaconf import OmegaConf

from detector.config import load_config
from detector.instantiate import ComponentArgumentError
from detector.modeling.build import build_model
from detector.weights.checkpoint_io import save_checkpoint
from detector.weights.config_upgrade import upgrade_config
from detector.weights.loading import load_model

MODEL_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"
# The two-stage models: the one-stage ones have no RoI heads.
ONE_STAGE = {"retinanet_fpn", "retinanet_fpn_v2", "fcos_fpn"}
MODEL_FILES = sorted(p.stem for p in MODEL_DIR.glob("*.yaml") if p.stem not in ONE_STAGE)
# A keypoint model's head is sized by the dataset (a training run fills it in).
EXTRA = {"keypoint_rcnn_fpn": ["model.roi_heads.keypoint_head.num_keypoints=4"]}


def tiny_config(name: str, *overrides: str):
    return load_config([f"model={name}", "backbone=resnet18_narrow", "model.num_classes=2", "model.fpn.out_channels=16",
                        "model.roi_heads.fc_dim=32", "model.roi_heads.conv_dim=8", "model.input.min_size_test=64",
                        "model.input.max_size_test=96", "model.roi_heads.score_thresh=0.0", *EXTRA.get(name, []),
                        *overrides])


@pytest.mark.parametrize("name", MODEL_FILES)
def test_every_roi_heads_builder_takes_the_same_leading_arguments_and_sits_beside_its_heads(name):
    cfg = tiny_config(name)
    builder = get_object(cfg.model.roi_heads._target_)
    parameters = list(inspect.signature(builder).parameters.values())
    assert [p.name for p in parameters[:4]] == ["in_channels", "strides", "num_classes", "box_head"]
    assert parameters[-1].kind is inspect.Parameter.VAR_KEYWORD and parameters[-1].name == "box_keys"
    heads = build_model(cfg).roi_heads
    assert builder.__module__ == type(heads).__module__, f"{builder.__name__} is not in the module of {type(heads)}"


@pytest.mark.parametrize("name, old_target, heads_class", [
    ("faster_rcnn_fpn", "detector.modeling.build.standard_roi_heads", "RoIHeads"),
    ("mask_rcnn_fpn", "detector.modeling.mask_head.mask_roi_heads", "MaskRoIHeads"),
])
def test_a_checkpoint_storing_a_builders_old_path_loads_the_same_model(name, old_target, heads_class, tmp_path):
    cfg = tiny_config(name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    stored = OmegaConf.to_container(cfg, resolve=True)
    stored["model"]["roi_heads"]["_target_"] = old_target
    path = save_checkpoint({"model": model.state_dict(), "iteration": 1, "config": stored}, tmp_path / "old.pth")

    assert upgrade_config(stored)["model"]["roi_heads"]["_target_"] == cfg.model.roi_heads._target_
    loaded = load_model(path)
    assert type(loaded.roi_heads).__name__ == heads_class
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = model([image])[0], loaded([image])[0]
    assert set(actual) == set(expected) and len(actual["boxes"]) > 0
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key])


def test_a_misspelt_box_branch_key_is_named():
    cfg = tiny_config("cascade_rcnn_fpn", "+model.roi_heads.fg_iou_tresh=0.5")
    with pytest.raises(ComponentArgumentError, match=r"model\.roi_heads: unknown key\(s\) \['fg_iou_tresh'\]"):
        build_model(cfg)


def test_a_missing_box_branch_key_is_named():
    cfg = tiny_config("mask_rcnn_fpn", "~model.roi_heads.nms_thresh")
    with pytest.raises(ComponentArgumentError, match=r"missing key\(s\) \['nms_thresh'\]"):
        build_model(cfg)
