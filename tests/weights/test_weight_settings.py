"""Starting weights bring the input settings they were made with (channel order, pixel
statistics, which bottleneck conv strides): a run adopts them, and code that builds the model
itself is told the overrides instead of getting features computed under other settings."""
from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from detector.config import load_config
from detector.modeling.backbone.resnet import ResNet
from detector.modeling.build import build_model
from detector.weights.loading import load_initial_weights
from detector.weights.weight_settings import adopt_weight_settings, check_weight_settings

MSRA_LIKE = ["backbone.stride_in_1x1=true", "model.input.format=BGR",
             "model.input.pixel_mean=[0.406,0.456,0.485]", "model.input.pixel_std=[0.0039216,0.0039216,0.0039216]"]
SMALL = ["backbone=resnet18", "model.num_classes=2", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64"]


def save_backbone(path, *settings: str):
    """A backbone file as tools/convert_weights.py writes one: ResNet-18 weights and the config
    they were made with (`settings` as overrides)."""
    config = OmegaConf.to_container(load_config(["backbone=resnet18", *settings]), resolve=True)
    torch.save({"model": ResNet(depth=18).state_dict(), "iteration": 0, "config": config}, path)
    return path


def test_a_run_adopts_the_settings_its_backbone_weights_record(tmp_path, caplog):
    weights = save_backbone(tmp_path / "msra_like.pth", *MSRA_LIKE)
    cfg = load_config([*SMALL, f"backbone.weights={weights}"])
    with pytest.raises(ValueError, match=r"backbone.stride_in_1x1=true model.input.format=BGR "
                                         r"model.input.pixel_mean=\[0.406,0.456,0.485\]"):
        check_weight_settings(cfg)
    with caplog.at_level(logging.INFO):
        changed = adopt_weight_settings(cfg)
    assert changed["backbone.stride_in_1x1"] == (False, True)
    assert changed["model.input.format"] == ("RGB", "BGR")
    assert cfg.model.input.pixel_std == pytest.approx([0.0039216] * 3)
    assert str(weights) in caplog.text and "model.input.format=BGR" in caplog.text
    check_weight_settings(cfg)   # now the same
    model = build_model(cfg)
    load_initial_weights(model, cfg)
    assert model.backbone.body.layer2[0].conv1.stride == (2, 2)
    assert adopt_weight_settings(cfg) == {}   # a second time changes nothing


def test_weights_that_record_nothing_or_the_same_change_nothing(tmp_path):
    bare = tmp_path / "bare.pth"   # a torchvision download: a state dict, no config
    torch.save(ResNet(depth=18).state_dict(), bare)
    same = save_backbone(tmp_path / "same.pth")
    # With a bare file, the user's own statistics stay: nothing says the weights want others.
    for overrides in ([f"backbone.weights={bare}", "model.input.pixel_mean=[0.5,0.5,0.5]"],
                      [f"backbone.weights={same}"]):
        cfg = load_config([*SMALL, *overrides])
        before = OmegaConf.to_container(cfg, resolve=True)
        assert adopt_weight_settings(cfg) == {}
        assert OmegaConf.to_container(cfg, resolve=True) == before
        check_weight_settings(cfg)


def test_model_weights_decide_over_backbone_weights(tmp_path):
    backbone = save_backbone(tmp_path / "msra_like.pth", *MSRA_LIKE)
    detector = tmp_path / "detector.pth"
    cfg = load_config(SMALL)
    torch.save({"model": build_model(cfg).state_dict(), "iteration": 0,
                "config": OmegaConf.to_container(cfg, resolve=True)}, detector)
    cfg = load_config([*SMALL, f"backbone.weights={backbone}", f"model.weights={detector}"])
    assert adopt_weight_settings(cfg) == {}   # the detector, loaded last, was made with RGB
    assert cfg.model.input.format == "RGB"


def test_a_detector_file_brings_its_heads_settings_too(tmp_path):
    """Detectron2's layout (background last, aligned RoIAlign, unrounded anchors at fixed strides)
    loads into torchvision's without a shape error; a run must take it from the file, and then
    detects exactly as the file's own model does."""
    d2_like = [*MSRA_LIKE, "model.roi_heads.predictor_layout=detectron2", "model.roi_heads.pooler_aligned=true",
               "model.roi_heads.pooler_sampling_ratio=0", "model.anchor_generator.round_anchors=false",
               "model.anchor_generator.strides=[4,8,16,32,64]", "model.roi_heads.score_thresh=0.0"]
    made_with = load_config([*SMALL, *d2_like])
    torch.manual_seed(0)
    original = build_model(made_with).eval()
    detector = tmp_path / "d2_like.pth"
    torch.save({"model": original.state_dict(), "iteration": 0,
                "config": OmegaConf.to_container(made_with, resolve=True)}, detector)

    cfg = load_config([*SMALL, f"model.weights={detector}", "model.roi_heads.score_thresh=0.0"])
    with pytest.raises(ValueError, match="model.roi_heads.predictor_layout=detectron2"):
        load_initial_weights(build_model(cfg), cfg)
    changed = adopt_weight_settings(cfg)
    assert changed["model.anchor_generator.strides"] == (None, [4, 8, 16, 32, 64])
    assert {"model.roi_heads.pooler_aligned", "model.roi_heads.pooler_sampling_ratio",
            "model.anchor_generator.round_anchors", "backbone.stride_in_1x1"} <= set(changed)
    model = build_model(cfg)
    load_initial_weights(model, cfg)
    image = torch.rand(3, 96, 128)
    with torch.no_grad():
        ours, theirs = model.eval()([image])[0], original([image])[0]
    assert len(theirs["boxes"]) > 0 and torch.equal(ours["boxes"], theirs["boxes"])
    assert torch.equal(ours["labels"], theirs["labels"])


def test_a_mask_detector_file_brings_how_its_masks_are_pasted(tmp_path):
    """Detectron2's converted mask models record mask_paste=detectron2 (their masks were trained to
    be pasted its way); a run fine-tuning one pastes them so too. A box model's run has no such key."""
    tiny_mask = ["model=mask_rcnn_fpn", *SMALL, "model.roi_heads.conv_dim=8"]
    made_with = load_config([*tiny_mask, "model.roi_heads.mask_paste=detectron2"])
    detector = tmp_path / "d2_mask.pth"
    torch.save({"model": build_model(made_with).state_dict(), "iteration": 0,
                "config": OmegaConf.to_container(made_with, resolve=True)}, detector)
    cfg = load_config([*tiny_mask, f"model.weights={detector}"])
    assert adopt_weight_settings(cfg) == {"model.roi_heads.mask_paste": ("torchvision", "detectron2")}
    model = build_model(cfg)
    load_initial_weights(model, cfg)
    assert model.roi_heads.mask_paste == "detectron2"
    box_run = load_config([*SMALL, f"model.weights={detector}"])   # its heads differ, but nothing to adopt here
    assert "model.roi_heads.mask_paste" not in adopt_weight_settings(box_run)


def test_a_backbone_file_leaves_the_runs_head_settings(tmp_path):
    weights = save_backbone(tmp_path / "msra_like.pth", *MSRA_LIKE)   # its config: conf/'s anchors
    cfg = load_config([*SMALL, f"backbone.weights={weights}", "model.anchor_generator.sizes=[16,32,64,128,256]"])
    adopt_weight_settings(cfg)
    assert list(cfg.model.anchor_generator.sizes) == [16, 32, 64, 128, 256]


def test_the_classifier_takes_the_stride_only(tmp_path):
    weights = save_backbone(tmp_path / "msra_like.pth", *MSRA_LIKE)
    cfg = load_config([f"data.root={tmp_path}", "backbone=resnet18", f"backbone.weights={weights}"], config_name="cls")
    assert set(adopt_weight_settings(cfg)) == {"backbone.stride_in_1x1"}   # it has no model.input
    assert cfg.backbone.stride_in_1x1 is True


def test_train_net_records_the_adopted_settings(tmp_path):
    """Through the tool: the run's config.yaml and log say what the weights brought."""
    from test_train_net import run, tiny

    weights = save_backbone(tmp_path / "msra_like.pth", *MSRA_LIKE)
    out = tmp_path / "out"
    run(tiny(tmp_path / "shapes", out, "backbone=resnet18", f"backbone.weights={weights}", "train.max_iter=1",
             "train.eval_period=0"))
    recorded = OmegaConf.load(out / "config.yaml")
    assert recorded.backbone.stride_in_1x1 is True and recorded.model.input.format == "BGR"
    assert recorded.model.input.pixel_mean == pytest.approx([0.406, 0.456, 0.485])
    assert "was made with other settings; using them: backbone.stride_in_1x1=true" in (out / "log.txt").read_text()
