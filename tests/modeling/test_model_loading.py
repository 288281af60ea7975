"""build_model / load_model / load_weights_into: checkpoints carry their config, loads are strict."""
import pytest
import torch
from omegaconf import OmegaConf

from detector.checkpoint_io import CheckpointError, save_checkpoint
from detector.modeling.build import build_model, load_model, load_weights_into
from detector.weights.safetensors_io import export_safetensors
from detector.weights.state_dicts import WeightsMismatchError


def save_project_checkpoint(model, cfg, path):
    return save_checkpoint({"model": model.state_dict(), "iteration": 7,
                            "config": OmegaConf.to_container(cfg, resolve=True)}, path)


def test_load_model_rebuilds_from_carried_config_with_overrides(make_small_config, tmp_path):
    cfg = make_small_config("model.roi_heads.box_head=conv4fc", "model.roi_heads.conv_dim=32")
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


def test_model_weights_key_loads_at_build_and_safetensors_round_trip(make_small_config, tmp_path):
    cfg = make_small_config()
    torch.manual_seed(1)
    source = build_model(cfg)
    checkpoint = {"model": source.state_dict(), "iteration": 3, "config": OmegaConf.to_container(cfg, resolve=True)}
    pth = save_checkpoint(checkpoint, tmp_path / "w.pth")
    safe = export_safetensors(checkpoint, tmp_path / "w.safetensors")
    torch.manual_seed(2)
    for path in (pth, safe):
        built = build_model(make_small_config(f"model.weights={path}"))
        assert torch.equal(built.state_dict()["rpn.head.deltas.weight"], source.state_dict()["rpn.head.deltas.weight"])
    loaded = load_model(safe)
    assert torch.equal(loaded.state_dict()["roi_heads.box_head.fc1.weight"],
                       source.state_dict()["roi_heads.box_head.fc1.weight"])


def test_bn_checkpoint_loads_into_frozen_bn_and_back(make_small_config, tmp_path):
    """num_batches_tracked exists only with BatchNorm; switching norms must still load strictly."""
    bn_cfg = make_small_config("backbone.norm=bn")
    path = save_project_checkpoint(build_model(bn_cfg), bn_cfg, tmp_path / "bn.pth")
    load_weights_into(build_model(make_small_config("backbone.norm=frozen_bn")), path)
    frozen_cfg = make_small_config("backbone.norm=frozen_bn")
    path = save_project_checkpoint(build_model(frozen_cfg), frozen_cfg, tmp_path / "frozen.pth")
    load_weights_into(build_model(bn_cfg), path)


def test_pickled_objects_in_checkpoints_are_refused(make_small_config, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": OmegaConf.create({"a": 1})}, path)   # a DictConfig object, not plain data
    with pytest.raises(CheckpointError, match="Refusing"):
        load_model(path)


def test_null_num_classes_is_resolved_or_explained():
    from detector.config import load_config

    cfg = load_config(["backbone=resnet18", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=32"])
    try:
        from detector.data import class_names  # noqa: F401
        available = True
    except ImportError:
        available = False
    if not available:
        with pytest.raises(ValueError, match="model.num_classes"):
            build_model(cfg)
        return
    try:
        model = build_model(cfg)
    except ValueError as error:   # the dataset itself may be missing on this machine
        pytest.skip(f"dataset not available: {error}")
    assert model.num_classes == cfg.model.num_classes == len(cfg.model.class_names)
