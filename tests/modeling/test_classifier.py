"""The ResNet classifier: torchvision parity, strict loading, head re-initialisation, transfer."""
from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from detector.config import instantiate, load_config
from detector.modeling.build import build_model
from detector.modeling.classifier import ResNetClassifier
from detector.weights.loading import (
    classifier_state_from_file,
    load_backbone_weights,
    load_classifier_weights,
    load_initial_weights,
)
from detector.weights.state_dicts import WeightsMismatchError


def randomize_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so a wrong BN mapping shows up."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def torchvision_resnet50_file(tmp_path_factory):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    randomize_batch_norm(reference)
    path = tmp_path_factory.mktemp("weights") / "resnet50_tv.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


def test_resnet50_logits_equal_torchvision(torchvision_resnet50_file):
    path, reference = torchvision_resnet50_file
    model = ResNetClassifier(num_classes=1000, depth=50).eval()
    reinitialised = load_classifier_weights(model, classifier_state_from_file(path), str(path))
    assert reinitialised == []
    assert list(model.state_dict()) == list(reference.state_dict())  # torchvision's names, in its order
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(images), reference(images)
    assert ours.shape == (2, 1000)
    # Logits reach several hundred with random weights; the frozen norms are folded into the
    # convolutions, so agreement is to float rounding relative to that scale.
    assert (ours - theirs).abs().max().item() <= 2e-6 * theirs.abs().max().item()


def test_resnet50_file_loads_strictly_into_detector_backbone(torchvision_resnet50_file):
    path, reference = torchvision_resnet50_file
    cfg = load_config(["backbone=resnet50"])
    body = instantiate(cfg.backbone)
    load_backbone_weights(body, path)  # strict apart from the fc head the body does not have
    assert torch.equal(body.layer3[2].conv2.weight, reference.layer3[2].conv2.weight)
    assert torch.equal(body.bn1.running_var, reference.bn1.running_var)


@pytest.mark.parametrize("arch, depth, groups, width", [("resnext50_32x4d", 50, 32, 4), ("resnet18", 18, 1, 64)])
def test_torchvision_state_dicts_load_strictly(arch, depth, groups, width):
    reference = getattr(torchvision.models, arch)(weights=None, num_classes=7).eval()
    randomize_batch_norm(reference, seed=3)
    model = ResNetClassifier(num_classes=7, depth=depth, groups=groups, width_per_group=width).eval()
    load_classifier_weights(model, reference.state_dict(), arch)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(images) - reference(images)).abs().max().item() <= 1e-4


def test_strict_errors_name_missing_and_unexpected_keys():
    model = ResNetClassifier(num_classes=5, depth=18)
    state = dict(model.state_dict())
    del state["layer2.1.conv1.weight"]
    state["layer2.1.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsMismatchError) as error:
        load_classifier_weights(model, state, "broken.pth")
    message = str(error.value)
    assert "broken.pth" in message
    assert "missing keys (1): layer2.1.conv1.weight" in message
    assert "unexpected keys (1): layer2.1.extra.weight" in message


def test_wrong_depth_is_a_shape_error_not_a_silent_load():
    resnet34 = torchvision.models.resnet34(weights=None, num_classes=5).state_dict()
    model = ResNetClassifier(num_classes=5, depth=18)
    with pytest.raises(WeightsMismatchError, match="unexpected keys .*layer1.2.conv1.weight"):
        load_classifier_weights(model, resnet34, "resnet34.pth")


def test_new_class_count_reinitialises_only_the_head(caplog):
    torch.manual_seed(0)
    source = ResNetClassifier(num_classes=10, depth=18)
    randomize_batch_norm(source)
    torch.manual_seed(1)
    target = ResNetClassifier(num_classes=3, depth=18)
    before_fc = {k: v.detach().clone() for k, v in target.fc.state_dict().items()}
    # The head drawn by nn.Linear's default initialisation from a known generator state:
    # loading must give exactly these values (a new head, drawn the default way).
    torch.manual_seed(2)
    expected_fc = nn.Linear(512, 3).state_dict()
    torch.manual_seed(2)
    with caplog.at_level(logging.INFO, logger="detector"):
        reinitialised = load_classifier_weights(target, source.state_dict(), "ten_classes.pth")
    assert reinitialised == ["fc.weight", "fc.bias"]
    assert "re-initialised fc.weight, fc.bias" in caplog.text
    assert "10 classes" in caplog.text
    source_state, target_state = source.state_dict(), target.state_dict()
    for key, value in target_state.items():
        if key.startswith("fc."):
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, source_state[key]), key
    # A new head: not the one the model had before loading (reset_head drew new values) ...
    for key, value in target.fc.state_dict().items():
        assert value.shape == before_fc[key].shape
        assert not torch.equal(value, before_fc[key]), f"fc.{key} was not re-initialised"
        # ... drawn exactly as nn.Linear draws a fresh layer.
        assert torch.equal(value, expected_fc[key]), f"fc.{key} is not nn.Linear's default initialisation"


def test_freeze_at_fixes_the_stem_and_early_stages():
    model = ResNetClassifier(num_classes=3, depth=18, freeze_at=2)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert "conv1.weight" in frozen and "layer1.0.conv1.weight" in frozen
    assert not any(name.startswith(("layer2", "layer3", "layer4", "fc")) for name in frozen)


def test_classifier_checkpoint_is_a_detector_backbone(tmp_path):
    """Transfer: a checkpoint of this project's classifier starts the detector's backbone."""
    cfg = load_config(["data.root=/unused", "model.num_classes=3"], config_name="cls")
    classifier = build_model(cfg)
    randomize_batch_norm(classifier, seed=5)
    path = tmp_path / "model_final.pth"
    torch.save({"model": classifier.state_dict(), "iteration": 10}, path)

    det_cfg = load_config(["backbone=resnet18", f"backbone.weights={path}", "backbone.norm=frozen_bn",
                           "model.num_classes=3"])
    detector_model = build_model(det_cfg)
    load_initial_weights(detector_model, det_cfg)
    backbone = detector_model.backbone
    assert torch.equal(backbone.body.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    assert torch.equal(backbone.body.layer2[0].downsample[1].running_mean, classifier.layer2[0].downsample[1].running_mean)

    # And back: the classifier config's model.weights takes the same file, head included.
    again_cfg = load_config(["data.root=/unused", "model.num_classes=3", f"model.weights={path}"], config_name="cls")
    again = build_model(again_cfg)
    load_initial_weights(again, again_cfg)
    assert torch.equal(again.fc.weight, classifier.fc.weight)


def test_backbone_weights_give_the_body_and_keep_a_new_head(torchvision_resnet50_file):
    path, reference = torchvision_resnet50_file
    cfg = load_config(["data.root=/unused", "model.num_classes=4", "backbone=resnet50", f"backbone.weights={path}"],
                      config_name="cls")
    model = build_model(cfg)
    load_initial_weights(model, cfg)
    assert torch.equal(model.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    assert model.fc.weight.shape == (4, 2048)
