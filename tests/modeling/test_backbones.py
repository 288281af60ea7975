from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torchvision.ops import FrozenBatchNorm2d

from detector.weights.checkpoint_io import save_checkpoint
from detector.config import load_config
from detector.modeling.backbone.resnet import ResNet
from detector.config import instantiate
from detector.modeling.build import build_model
from detector.weights.loading import load_backbone_weights
from detector.weights.state_dicts import WeightsMismatchError

BACKBONES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "backbone").glob("*.yaml"))


def test_every_interface_backbone_has_a_config():
    assert set(BACKBONES) >= {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                              "resnext50_32x4d", "resnext101_32x8d"}


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_builds_with_expected_feature_shapes(name):
    cfg = load_config([f"backbone={name}", "model.num_classes=1"])
    # On the meta device: the real modules and shapes, without seconds of weight
    # initialization for the 60-90M parameter variants (real forwards are tested below).
    with torch.device("meta"):
        backbone = build_model(cfg).backbone.eval()
        images = torch.zeros(1, 3, 64, 96)
    expansion = 1 if cfg.backbone.depth in (18, 34) else 4
    with torch.no_grad():
        body_features = backbone.body(images)
        pyramid = backbone(images)
    assert list(body_features) == ["res2", "res3", "res4", "res5"]
    for index, (stage, feature) in enumerate(body_features.items()):
        stride = 4 * 2**index
        assert feature.shape == (1, cfg.backbone.base_channels * 2**index * expansion, 64 // stride, 96 // stride), stage
    assert list(pyramid) == ["p2", "p3", "p4", "p5", "p6"]
    for index, feature in enumerate(pyramid.values()):
        stride = 4 * 2**index
        assert feature.shape == (1, cfg.model.fpn.out_channels, -(-64 // stride), -(-96 // stride))


@pytest.mark.parametrize("tv_name", ["resnet18", "resnext50_32x4d"])
def test_torchvision_imagenet_weights_load_strictly_and_agree(tmp_path, tv_name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, tv_name)(weights=None).eval()
    # Away from identity statistics (mean 0, var 1, weight 1, bias 0), so that a norm term
    # dropped or swapped with another on loading changes the features.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    path = tmp_path / f"{tv_name}.pth"
    torch.save(reference.state_dict(), path)   # a bare state dict, fc included
    cfg = load_config([f"backbone={tv_name}", f"backbone.weights={path}"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
    for fold_norms in (False, True):
        body = instantiate(cfg.backbone)
        body.set_norm_folding(fold_norms)
        load_backbone_weights(body, path)
        body.eval()
        with torch.no_grad():
            actual = body(x)["res5"]
        if not fold_norms:   # torchvision's order of operations
            torch.testing.assert_close(actual, expected)
        else:   # norms folded into the convolutions: float rounding only, relative to the features' scale
            scale = float(expected.abs().max())
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5 * scale)


def test_backbone_weights_key_errors_name_the_keys(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    state.pop("layer2.0.conv1.weight")
    state["layer9.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    save_checkpoint({"model": state}, path)
    body = ResNet(depth=18)
    with pytest.raises(WeightsMismatchError) as error:
        load_backbone_weights(body, path)
    assert "layer2.0.conv1.weight" in str(error.value) and "layer9.extra.weight" in str(error.value)
    assert "missing" in str(error.value) and "unexpected" in str(error.value) and str(path) in str(error.value)


def test_wrong_depth_weights_report_shape_mismatch(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsMismatchError, match="missing keys"):
        load_backbone_weights(ResNet(depth=34), path)


def test_freeze_at_freezes_stem_and_first_stages():
    body = ResNet(depth=18, norm="bn", freeze_at=2)
    frozen = {n for n, p in body.named_parameters() if not p.requires_grad}
    assert "conv1.weight" in frozen and "bn1.weight" in frozen
    assert any(n.startswith("layer1.") for n in frozen)
    assert not any(n.startswith(("layer2.", "layer3.", "layer4.")) for n in frozen)
    body.train()
    # Frozen stages keep their BatchNorm statistics fixed in training mode.
    assert not body.bn1.training and not body.layer1[0].bn1.training and body.layer2[0].bn1.training
    assert all(p.requires_grad for p in ResNet(depth=18, freeze_at=0).parameters())


def test_out_features_subset_stops_early():
    body = ResNet(depth=18, out_features=["res3", "res4"])
    out = body(torch.zeros(1, 3, 64, 64))
    assert list(out) == ["res3", "res4"]
    assert not hasattr(body, "layer4")


def test_stride_in_1x1_and_resnext_layout():
    msra = ResNet(depth=50, stride_in_1x1=True, groups=32, width_per_group=4, out_features=["res3"])
    block = msra.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert block.conv2.groups == 32 and block.conv2.weight.shape == (256, 8, 3, 3)
    v15 = ResNet(depth=50, out_features=["res3"])
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)


@pytest.mark.parametrize("norm, kind", [("frozen_bn", FrozenBatchNorm2d), ("bn", torch.nn.BatchNorm2d),
                                        ("sync_bn", torch.nn.SyncBatchNorm), ("gn", torch.nn.GroupNorm)])
def test_norm_choice(norm, kind):
    body = ResNet(depth=18, norm=norm, out_features=["res2"])
    assert isinstance(body.bn1, kind) and isinstance(body.layer1[0].bn2, kind)
    assert body.eval()(torch.zeros(1, 3, 32, 32))["res2"].shape == (1, 64, 8, 8)


def test_custom_blocks_per_stage_and_bad_values():
    cfg = OmegaConf.create({"_target_": "detector.modeling.backbone.resnet.ResNet", "depth": 50,
                            "blocks_per_stage": [1, 1, 2, 1], "groups": 1, "width_per_group": 64,
                            "norm": "bn", "freeze_at": 0, "out_features": ["res5"], "stride_in_1x1": False})
    body = instantiate(cfg)
    assert [len(getattr(body, f"layer{i}")) for i in range(1, 5)] == [1, 1, 2, 1]
    with pytest.raises(ValueError, match="depth=42"):
        ResNet(depth=42)
    with pytest.raises(ValueError, match="res7"):
        ResNet(depth=18, out_features=["res7"])
    with pytest.raises(ValueError, match="Unknown norm"):
        ResNet(depth=18, norm="layernorm")
