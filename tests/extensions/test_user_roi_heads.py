"""A user's own RoI-heads family (user_plugins/roi_family.py), selected by model.roi_heads._target_
in a config file of theirs, with no edit inside detector/: it builds from the box branch's keys
like the library's families, trains a few iterations, predicts, and comes back from a
checkpoint through its stored config (docs/extending.md, "A new RoI-heads family")."""
import torch
from omegaconf import OmegaConf

from detector import build_model, load_config, load_model
from user_plugins.roi_family import LabelSmoothingRoIHeads

TINY = ["backbone=tiny_cnn", "model.num_classes=2", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64",
        "model.input.min_size_test=128", "model.input.max_size_test=128"]


def batch():
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(5))]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [30.0, 5.0, 90.0, 40.0]]), "labels": torch.tensor([1, 2])}]
    return images, targets


def losses_of(cfg) -> dict[str, torch.Tensor]:
    """The training losses of a model built and sampled under one seed."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with torch.no_grad():
        return model(*batch())


def test_a_user_roi_heads_family_builds_trains_predicts_and_reloads(searchpath, tmp_path):
    cfg = load_config([searchpath, "model=label_smoothing_rcnn", *TINY])
    torch.manual_seed(0)
    model = build_model(cfg)
    heads = model.roi_heads
    assert isinstance(heads, LabelSmoothingRoIHeads) and heads.label_smoothing == 0.1
    assert heads.box_predictor.cls_score.out_features == 3 and heads.pooler.output_size == (7, 7)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = heads.box_predictor.cls_score.weight.detach().clone()
    model.train()
    for _ in range(2):
        losses = model(*batch())
        assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert not torch.equal(heads.box_predictor.cls_score.weight, before)       # the family's layers learn

    model.eval()
    images, _ = batch()
    with torch.no_grad():
        detections = model(images)[0]
    assert set(detections) == {"boxes", "scores", "labels"} and len(detections["boxes"]) > 0

    path = tmp_path / "user_roi_heads.pth"
    torch.save({"model": model.state_dict(), "iteration": 2, "config": OmegaConf.to_container(cfg, resolve=True)}, path)
    again = load_model(path)
    assert isinstance(again.roi_heads, LabelSmoothingRoIHeads) and again.roi_heads.label_smoothing == 0.1
    with torch.no_grad():
        redo = again(images)[0]
    for key in detections:
        torch.testing.assert_close(redo[key], detections[key])


def test_the_family_key_changes_only_its_own_loss(searchpath):
    """With no smoothing the family is the plain one, part for part: the same losses under one
    seed. Smoothing changes the classification loss and nothing else."""
    plain = losses_of(load_config([searchpath, *TINY]))
    unsmoothed = losses_of(load_config([searchpath, "model=label_smoothing_rcnn", "model.roi_heads.label_smoothing=0.0",
                                        *TINY]))
    smoothed = losses_of(load_config([searchpath, "model=label_smoothing_rcnn", *TINY]))
    assert set(unsmoothed) == set(plain)
    for key in plain:
        torch.testing.assert_close(unsmoothed[key], plain[key], rtol=0, atol=0)
    assert not torch.equal(smoothed["loss_classifier"], plain["loss_classifier"])
    for key in ("loss_objectness", "loss_rpn_box_reg", "loss_box_reg"):
        torch.testing.assert_close(smoothed[key], plain[key], rtol=0, atol=0)
