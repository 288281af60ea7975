"""build_model / load_model / load_weights_into: checkpoints carry their config, loads are strict."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from detector.weights.checkpoint_io import CheckpointError, save_checkpoint
from detector.modeling.build import build_model
from detector.weights.loading import load_initial_weights, load_model, load_weights_into
from detector.weights.formats.safetensors_file import export_safetensors
from detector.weights.state_dicts import WeightsMismatchError


def save_project_checkpoint(model, cfg, path):
    return save_checkpoint({"model": model.state_dict(), "iteration": 7,
                            "config": OmegaConf.to_container(cfg, resolve=True)}, path)


def test_load_model_rebuilds_from_carried_config_with_overrides(make_small_config, tmp_path):
    # A conv box head (not conf/'s default): the carried config, not conf/, must rebuild it.
    cfg = make_small_config("model=faster_rcnn_fpn_v2", "model.roi_heads.conv_dim=32")
    torch.manual_seed(0)
    model = build_model(cfg)
    path = save_project_checkpoint(model, cfg, tmp_path / "model_final.pth")
    loaded = load_model(path, overrides=["model.roi_heads.score_thresh=0.0", "model.input.min_size_test=64"])
    assert not loaded.training
    assert loaded.roi_heads.score_thresh == 0.0 and loaded.preprocessor.min_size_test == 64
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    model.eval()
    model.roi_heads.score_thresh = 0.0
    model.preprocessor.min_size_test = 64
    image = torch.rand(3, 80, 100)
    with torch.no_grad():
        expected, actual = model([image])[0], loaded([image])[0]
    assert torch.equal(expected["boxes"], actual["boxes"]) and len(actual["boxes"]) > 0


def test_load_model_rejects_unknown_override_keys(make_small_config, tmp_path):
    cfg = make_small_config()
    path = save_project_checkpoint(build_model(cfg), cfg, tmp_path / "m.pth")
    with pytest.raises(ValueError, match="score_threshold"):
        load_model(path, overrides=["model.roi_heads.score_threshold=0.1"])
    with pytest.raises(ValueError, match="key=value"):
        load_model(path, overrides=["model.roi_heads.score_thresh"])


def test_checkpoint_without_config_is_explained(make_small_config, tmp_path):
    model = build_model(make_small_config())
    path = save_checkpoint({"model": model.state_dict()}, tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="carries no 'config'"):
        load_model(path)


def test_strict_loading_names_missing_and_unexpected_keys(make_small_config, tmp_path):
    model = build_model(make_small_config())
    state = model.state_dict()
    state.pop("rpn.head.objectness.weight")
    state["roi_heads.box_head.fc3.weight"] = torch.zeros(1)
    path = save_checkpoint({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(WeightsMismatchError) as error:
        load_weights_into(model, path)
    message = str(error.value)
    assert "missing keys (1): rpn.head.objectness.weight" in message
    assert "unexpected keys (1): roi_heads.box_head.fc3.weight" in message and str(path) in message


def test_shape_mismatch_is_named(make_small_config, tmp_path):
    cfg = make_small_config()
    path = save_project_checkpoint(build_model(cfg), cfg, tmp_path / "two_classes.pth")
    other = build_model(make_small_config("model.num_classes=5"))
    with pytest.raises(WeightsMismatchError, match=r"roi_heads.box_predictor.cls_score.weight \(file \(3, 128\) vs model \(6, 128\)\)"):
        load_weights_into(other, path)


def test_model_weights_key_loads_as_initial_weights_and_safetensors_round_trip(make_small_config, tmp_path):
    cfg = make_small_config()
    torch.manual_seed(1)
    source = build_model(cfg)
    checkpoint = {"model": source.state_dict(), "iteration": 3, "config": OmegaConf.to_container(cfg, resolve=True)}
    pth = save_checkpoint(checkpoint, tmp_path / "w.pth")
    safe = export_safetensors(checkpoint, tmp_path / "w.safetensors")
    torch.manual_seed(2)
    for path in (pth, safe):
        built_cfg = make_small_config(f"model.weights={path}")
        built = build_model(built_cfg)
        load_initial_weights(built, built_cfg)
        assert torch.equal(built.state_dict()["rpn.head.deltas.weight"], source.state_dict()["rpn.head.deltas.weight"])
    loaded = load_model(safe)
    assert torch.equal(loaded.state_dict()["roi_heads.box_head.fc1.weight"],
                       source.state_dict()["roi_heads.box_head.fc1.weight"])


def randomize_norm_statistics(model, seed):
    """Distinct running statistics and affine terms in every BatchNorm-like layer (BatchNorm2d and
    FrozenBatchNorm2d alike), so a value that is dropped or mixed up on loading shows up."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "running_mean") and hasattr(module, "running_var"):
                n = module.running_mean.numel()
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def assert_same_weights_and_features(source, target):
    """Every key the two share is equal, and (both in eval mode, where BatchNorm is the same fixed
    affine map as FrozenBatchNorm) the backbone computes the same features."""
    target_state = target.state_dict()
    shared = [k for k in source.state_dict() if not k.endswith("num_batches_tracked")]
    assert any(k.endswith("running_var") for k in shared)
    for key in shared:
        assert torch.equal(target_state[key], source.state_dict()[key]), key
    source.eval(), target.eval()
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, actual = source.backbone(image), target.backbone(image)
    assert list(expected) == list(actual)
    for level in expected:
        torch.testing.assert_close(actual[level], expected[level], rtol=1e-4, atol=1e-5, msg=level)


def test_bn_checkpoint_loads_into_frozen_bn_and_back(make_small_config, tmp_path):
    """num_batches_tracked exists only with BatchNorm; switching norms must still load strictly,
    and carry every statistic and affine term across."""
    bn_cfg = make_small_config("backbone.norm=bn")
    frozen_cfg = make_small_config("backbone.norm=frozen_bn")
    torch.manual_seed(0)
    bn_model = build_model(bn_cfg)
    randomize_norm_statistics(bn_model, seed=1)
    path = save_project_checkpoint(bn_model, bn_cfg, tmp_path / "bn.pth")
    torch.manual_seed(1)
    frozen = build_model(frozen_cfg)
    load_weights_into(frozen, path)
    assert "backbone.body.bn1.num_batches_tracked" not in frozen.state_dict()
    assert_same_weights_and_features(bn_model, frozen)

    torch.manual_seed(2)
    frozen_model = build_model(frozen_cfg)
    randomize_norm_statistics(frozen_model, seed=2)
    path = save_project_checkpoint(frozen_model, frozen_cfg, tmp_path / "frozen.pth")
    torch.manual_seed(3)
    bn = build_model(bn_cfg)
    load_weights_into(bn, path)
    # The file has no step counter: the model keeps its own.
    assert int(bn.state_dict()["backbone.body.bn1.num_batches_tracked"]) == 0
    assert_same_weights_and_features(frozen_model, bn)


def test_pickled_objects_in_checkpoints_are_refused(make_small_config, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": OmegaConf.create({"a": 1})}, path)   # a DictConfig object, not plain data
    with pytest.raises(CheckpointError, match="Refusing"):
        load_model(path)


def test_null_num_classes_is_read_from_the_dataset(tmp_path):
    """model.num_classes=null takes the class count and names from the training annotations,
    in category-id order (label i <-> names[i - 1])."""
    from detector.config import load_config
    from detector.tasks.detection import DetectionTask

    images = tmp_path / "images"
    images.mkdir()
    annotations = tmp_path / "train.json"
    annotations.write_text(json.dumps({
        "images": [], "annotations": [],
        "categories": [{"id": 7, "name": "zebra"}, {"id": 2, "name": "cat"}, {"id": 4, "name": "ant"}],
    }))
    cfg = load_config([
        "backbone=resnet18", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=32", "dataset=coco_format",
        f"dataset.train.images={images}", f"dataset.train.annotations={annotations}",
        f"dataset.test.images={images}", f"dataset.test.annotations={annotations}",
    ])
    assert OmegaConf.is_interpolation(cfg.model, "num_classes")   # not set: ${dataset_num_classes:}
    DetectionTask().resolve_classes(cfg)   # what a run does before building its model
    model = build_model(cfg)
    assert model.num_classes == cfg.model.num_classes == 3
    assert list(cfg.model.class_names) == ["cat", "ant", "zebra"]
    assert model.roi_heads.box_predictor.cls_score.out_features == 4   # 3 classes + background


def test_null_num_classes_without_dataset_is_explained(tmp_path):
    from detector.config import load_config
    from detector.tasks.detection import DetectionTask

    cfg = load_config([
        "backbone=resnet18", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=32", "dataset=coco_format",
        f"dataset.train.images={tmp_path}", f"dataset.train.annotations={tmp_path / 'absent.json'}",
        f"dataset.test.images={tmp_path}", f"dataset.test.annotations={tmp_path / 'absent.json'}",
    ])
    with pytest.raises(FileNotFoundError, match="absent.json"):
        DetectionTask().resolve_classes(cfg)   # what a run does before building its model
