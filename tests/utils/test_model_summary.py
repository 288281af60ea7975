"""model_summary: parameter counts and FLOPs of a ResNet-18 FPN detector."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detector.utils.model_summary import count_flops, format_model_summary, model_summary


def _detector(*overrides):
    from detector.config import load_config
    from detector.modeling.build import build_model

    cfg = load_config(["backbone=resnet18", "backbone.base_channels=32", "model.num_classes=3",
                       "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64", "model.rpn.pre_nms_topk_test=50",
                       "model.rpn.post_nms_topk_test=20", *overrides])
    return build_model(cfg)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return _detector()


def test_counts_and_flops_scale_with_image_size(detector):
    detector.train()
    rng = torch.get_rng_state()
    test_size = (detector.preprocessor.min_size_test, detector.preprocessor.max_size_test)
    small = model_summary(detector, (64, 96))
    large = model_summary(detector, (128, 192))
    assert small["params"] == sum(p.numel() for p in detector.parameters())
    assert small["trainable_params"] == sum(p.numel() for p in detector.parameters() if p.requires_grad)
    assert small["image_size"] == [64, 96] and large["image_size"] == [128, 192]
    assert 0 < small["gflops"] < large["gflops"]
    # The convolutions dominate: four times the pixels cost at least three times the FLOPs.
    assert large["gflops"] > 3 * small["gflops"]
    # Left as found: training mode, the model's own test resize, the global RNG.
    assert detector.training
    assert (detector.preprocessor.min_size_test, detector.preprocessor.max_size_test) == test_size
    assert torch.equal(torch.get_rng_state(), rng)
    text = format_model_summary(small)
    assert f"{small['params']:,} parameters" in text and "64x96" in text and "2 FLOPs" in text


def test_flops_of_a_linear_layer_count_a_multiply_add_as_two():
    layer = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 7))
    assert count_flops(layer, (4, 5)) == 2 * 60 * 7


def test_frozen_backbone_has_fewer_trainable_parameters(detector):
    frozen = _detector("backbone.freeze_at=5")
    summary = model_summary(frozen, (64, 64))
    body = sum(p.numel() for name, p in frozen.named_parameters() if name.startswith("backbone.body."))
    assert summary["params"] == sum(p.numel() for p in detector.parameters())
    assert 0 < summary["trainable_params"] <= summary["params"] - body
