"""A user's own backbone and box head, plugged in by config alone (hydra.searchpath + a
_target_), train, evaluate, and come back from a checkpoint through its stored config."""
import torch

from detector import build_model, load_config, load_model
from user_plugins.box_head import PooledMLPHead
from user_plugins.tiny_backbone import TinyCNN


def tiny_targets():
    return [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [30.0, 5.0, 90.0, 40.0]]), "labels": torch.tensor([1, 2])}]


def test_user_backbone_and_box_head_build_train_and_evaluate(searchpath, tmp_path):
    cfg = load_config([searchpath, "backbone=tiny_cnn", "model=pooled_head_rcnn", "model.num_classes=2",
                       "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64",
                       "model.input.min_size_test=128", "model.input.max_size_test=128"])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.backbone.body, TinyCNN)
    assert isinstance(model.roi_heads.box_head, PooledMLPHead) and model.roi_heads.box_head.out_dim == 64
    assert list(model.pooled_levels) == ["p2", "p3", "p4", "p5"]

    model.train()
    images = [torch.rand(3, 128, 128)]
    losses = model(images, tiny_targets())
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.body.stem[0].weight.grad.abs().sum() > 0       # the user's backbone learns
    assert model.roi_heads.box_head.fc.weight.grad.abs().sum() > 0       # and the user's head

    model.eval()
    with torch.no_grad():
        detections = model(images)[0]
    assert set(detections) >= {"boxes", "scores", "labels"}

    # The checkpoint's stored, resolved config rebuilds the same user classes and outputs.
    from omegaconf import OmegaConf

    path = tmp_path / "user_model.pth"
    torch.save({"model": model.state_dict(), "iteration": 1, "config": OmegaConf.to_container(cfg, resolve=True)}, path)
    again = load_model(path)
    assert isinstance(again.backbone.body, TinyCNN) and isinstance(again.roi_heads.box_head, PooledMLPHead)
    with torch.no_grad():
        redo = again(images)[0]
    torch.testing.assert_close(redo["boxes"], detections["boxes"])
    torch.testing.assert_close(redo["scores"], detections["scores"])


def test_a_target_that_does_not_import_names_the_key(searchpath):
    import pytest

    cfg = load_config([searchpath, "backbone=tiny_cnn", "model.num_classes=2",
                       "backbone._target_=user_plugins.tiny_backbone.NoSuchNet"])
    with pytest.raises(ValueError, match=r"backbone\._target_=user_plugins\.tiny_backbone\.NoSuchNet: cannot import"):
        build_model(cfg)


def test_a_head_that_rejects_its_keys_names_them(searchpath):
    import pytest

    cfg = load_config([searchpath, "model=pooled_head_rcnn", "model.num_classes=2",
                       "+model.roi_heads.box_head.width=3"])
    with pytest.raises(TypeError, match=r"model\.roi_heads\.box_head: user_plugins\.box_head\.PooledMLPHead does not "
                                        r"take the keys of its config node.*width"):
        build_model(cfg)
