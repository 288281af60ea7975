"""The data side of Mask R-CNN end to end: a batch of the shapes train loader with masks is
what the mask model trains on (and a box model ignores the masks)."""
import pytest
import torch

from detector.data import build_train_loader, require_masks


def _small_model(cfg):
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    return build_model(cfg)


def test_a_mask_model_trains_on_the_loaders_masks(shapes_cfg):
    narrow = ["backbone=resnet18", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64", "model.roi_heads.conv_dim=32",
              "model.rpn.batch_size_per_image=32", "model.roi_heads.batch_size_per_image=16",
              "aug.min_size=[160]", "aug.max_size=160", "dataloader.batch_size=2"]
    cfg = shapes_cfg("model=mask_rcnn_fpn", *narrow)
    require_masks(cfg)
    batch = next(iter(build_train_loader(cfg, with_masks=True)))
    model = _small_model(cfg).train()
    losses = model(batch["images"], batch["targets"])
    assert "loss_mask" in losses and torch.isfinite(losses["loss_mask"])
    sum(losses.values()).backward()
    for part in (model.roi_heads.mask_head, model.roi_heads.mask_predictor):
        assert all(p.grad is not None for p in part.parameters())
        assert sum(float(p.grad.abs().sum()) for p in part.parameters()) > 0
    # Without masks the mask model refuses the batch, naming what it needs.
    plain = next(iter(build_train_loader(cfg)))
    with pytest.raises(ValueError, match="has no 'masks'"):
        model(plain["images"], plain["targets"])
