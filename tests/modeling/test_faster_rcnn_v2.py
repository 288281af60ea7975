"""model=faster_rcnn_fpn_v2: its config, how it builds on every backbone, and that it trains
from scratch with trainable BatchNorm (parity with torchvision: test_parity_torchvision.py)."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from detector.config import load_config
from detector.modeling.build import build_model

BACKBONES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "backbone").glob("*.yaml"))


def test_v2_option_is_v1_with_torchvision_v2_heads():
    # Composed as Hydra does (under a schedule that leaves the model alone): the model
    # section a checkpoint stores and rebuilds from.
    v1 = OmegaConf.to_container(load_config(["schedule=1x"]).model)
    v2 = OmegaConf.to_container(load_config(["model=faster_rcnn_fpn_v2", "schedule=1x"]).model)
    changed = {f"{section}.{key}" for section, values in v2.items() if isinstance(values, dict)
               for key, value in values.items() if v1[section][key] != value}
    assert v2["name"] == "faster_rcnn_fpn_v2"
    assert changed == {"fpn.norm", "rpn.conv_depth", "roi_heads.box_head", "roi_heads.conv_norm"}
    assert (v2["fpn"]["norm"], v2["rpn"]["conv_depth"], v2["roi_heads"]["box_head"]["_target_"],
            v2["roi_heads"]["conv_norm"], v2["roi_heads"]["conv_dim"], v2["roi_heads"]["fc_dim"]) == \
        ("bn", 2, "detector.modeling.roi_heads.ConvFCBoxHead", "bn", 256, 1024)
    assert v1["roi_heads"]["box_head"]["_target_"] == "detector.modeling.roi_heads.FCBoxHead"


@pytest.mark.parametrize("name", BACKBONES)
def test_v2_builds_on_every_backbone(name):
    cfg = load_config([f"backbone={name}", "model=faster_rcnn_fpn_v2", "model.num_classes=3"])
    # On the meta device: real modules and shapes without initializing up to 90M parameters.
    with torch.device("meta"):
        model = build_model(cfg).eval()
        images = torch.zeros(1, 3, 64, 96)
        pooled = torch.zeros(5, model.backbone.out_channels, 7, 7)
    fpn_blocks = list(model.backbone.fpn.lateral_convs) + list(model.backbone.fpn.output_convs)
    assert all(isinstance(block[1], nn.BatchNorm2d) and block[0].bias is None for block in fpn_blocks)
    head = model.roi_heads.box_head
    assert sum(isinstance(m, nn.BatchNorm2d) for m in head.convs) == 4
    assert all(m.bias is None for m in head.convs if isinstance(m, nn.Conv2d))
    assert len(model.rpn.head.convs) == 2
    with torch.no_grad():
        pyramid = model.backbone(images)
        assert [f.shape[1] for f in pyramid.values()] == [cfg.model.fpn.out_channels] * 5
        assert head(pooled).shape == (5, cfg.model.roi_heads.fc_dim)


def tiny_batch():
    images, targets = [], []
    for seed in (0, 1):
        image = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(seed)) * 0.2
        image[0, 12:48, 8:38] = 0.9
        image[2, 6:32, 48:90] = 0.9
        images.append(image)
        targets.append({"boxes": torch.tensor([[8.0, 12, 38, 48], [48, 6, 90, 32]]), "labels": torch.tensor([1, 2])})
    return images, targets


def small_v2(make_small_config, *overrides):
    torch.manual_seed(0)
    return build_model(make_small_config("model=faster_rcnn_fpn_v2", "model.roi_heads.conv_dim=32", *overrides))


def norms_of(model):
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)
            and name.startswith(("backbone.fpn.", "roi_heads.box_head."))}


def test_v2_trains_from_scratch_with_trainable_norms(make_small_config):
    model = small_v2(make_small_config)
    norms = norms_of(model)
    assert len(norms) == 8 + 4   # 4 lateral + 4 output FPN blocks, 4 box head convs
    body_norms = [m for m in model.backbone.body.modules() if isinstance(m, nn.BatchNorm2d)]
    assert body_norms and all(p.requires_grad for m in [*body_norms, *norms.values()] for p in m.parameters())
    before = {name: (m.weight.detach().clone(), m.running_mean.clone()) for name, m in norms.items()}
    model.train()
    images, targets = tiny_batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    history = []
    for _ in range(6):
        losses = model(images, targets)
        total = sum(losses.values())
        assert torch.isfinite(total), losses
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert sum(history[-3:]) / 3 < history[0], history
    for name, module in norms.items():
        weight, running_mean = before[name]
        assert not torch.equal(module.weight, weight), f"{name}: affine weight not trained"
        assert not torch.equal(module.running_mean, running_mean), f"{name}: statistics not updated"

    # Eval: the trained norms, folded into their convolutions (the default), against the
    # separate layers: the same detections up to float rounding.
    model.eval()
    with torch.no_grad():
        folded = model(images)
        set_folding(model, False)
        exact = model(images)
    assert model.roi_heads.box_head.fold_norms is False
    for got, want in zip(folded, exact):
        assert len(want["boxes"]) > 0 and torch.equal(got["labels"], want["labels"])
        torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(got["scores"], want["scores"], atol=1e-5, rtol=0)


def set_folding(model, enabled):
    """What model.fold_norms sets at build time, changed on a built model."""
    model.backbone.body.set_norm_folding(enabled)
    model.backbone.fpn.fold_norms = enabled
    model.roi_heads.box_head.fold_norms = enabled
