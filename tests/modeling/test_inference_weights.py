"""CPU inference convolutions reuse their prepared (folded, channels-last) weights
(detector/modeling/backbone/inference_weights.py): the detections are those of the per-call
computation bit for bit, any in-place change of a parameter or of a frozen norm's statistics
is seen at the next call, a model back in training keeps no copy, and the state dict has no
new entry. A tiny narrow ResNet-18 detector at 128 px: a second or so."""
from __future__ import annotations

import pytest
import torch

from detector.modeling.backbone import inference_weights


def tiny_detector():
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config(["backbone=resnet18_narrow", "model.num_classes=3", "model.fpn.out_channels=32",
                       "model.roi_heads.fc_dim=64", "model.input.min_size_test=128", "model.input.max_size_test=160",
                       "model.roi_heads.score_thresh=0.0", "model.channels_last=true", "model.fold_norms=true"])
    return build_model(cfg).eval()


def detections(model, image, cache: bool, monkeypatch) -> dict:
    if not cache:
        monkeypatch.setattr(inference_weights, "ENABLED", False)
    with torch.no_grad():
        out = model([image])[0]
    monkeypatch.undo()
    return out


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a) and len(a["scores"]) > 10


def prepared_count(model) -> int:
    return sum(1 for m in model.modules() if inference_weights.ATTRIBUTE in m.__dict__)


def test_prepared_weights_give_the_per_call_detections_bit_for_bit(monkeypatch):
    torch.set_num_threads(1)
    model = tiny_detector()
    image = torch.rand((3, 120, 150), generator=torch.Generator().manual_seed(1))
    reference = detections(model, image, cache=False, monkeypatch=monkeypatch)
    assert prepared_count(model) == 0
    first = detections(model, image, cache=True, monkeypatch=monkeypatch)
    assert prepared_count(model) >= 20   # every backbone, FPN and RPN convolution
    again = detections(model, image, cache=True, monkeypatch=monkeypatch)
    assert same(first, reference) and same(again, reference)


@pytest.mark.parametrize("change", ["conv_weight", "norm_statistics"])
def test_an_in_place_change_is_seen_at_the_next_call(monkeypatch, change):
    torch.set_num_threads(1)
    model = tiny_detector()
    image = torch.rand((3, 120, 150), generator=torch.Generator().manual_seed(1))
    before = detections(model, image, cache=True, monkeypatch=monkeypatch)
    body = model.backbone.body
    with torch.no_grad():
        if change == "conv_weight":   # the first convolution of the backbone, folded with its norm
            next(m for m in body.modules() if isinstance(m, torch.nn.Conv2d)).weight.mul_(1.5)
        else:
            norm = next(m for m in body.modules() if hasattr(m, "running_var"))
            norm.running_var.mul_(4.0)
    after = detections(model, image, cache=True, monkeypatch=monkeypatch)
    per_call = detections(model, image, cache=False, monkeypatch=monkeypatch)
    assert same(after, per_call)
    assert not torch.equal(after["scores"][:10], before["scores"][:10])


def test_training_mode_keeps_no_copy_and_the_state_dict_is_unchanged(monkeypatch):
    torch.set_num_threads(1)
    model = tiny_detector()
    keys = set(model.state_dict())
    detections(model, torch.rand((3, 120, 150)), cache=True, monkeypatch=monkeypatch)
    assert prepared_count(model) > 0 and set(model.state_dict()) == keys
    model.train()
    images = [torch.rand((3, 128, 128))]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])}]
    model(images, targets)
    assert prepared_count(model) == 0


def test_a_parameter_put_in_place_of_another_is_seen_and_the_old_memory_stays_held(monkeypatch):
    """A new weight tensor (assigned, or load_state_dict(assign=True)) has a new storage, so the
    key changes; the prepared copy keeps the old tensor alive until then, so that no new tensor
    can be allocated at its address with an equal version and look unchanged."""
    import gc
    import weakref

    torch.set_num_threads(1)
    model = tiny_detector()
    image = torch.rand((3, 120, 150), generator=torch.Generator().manual_seed(1))
    before = detections(model, image, cache=True, monkeypatch=monkeypatch)
    conv = next(m for m in model.backbone.body.modules() if isinstance(m, torch.nn.Conv2d))
    old = weakref.ref(conv.weight)
    conv.weight = torch.nn.Parameter(conv.weight.detach() * 1.5, requires_grad=False)
    gc.collect()
    assert old() is not None   # held by the prepared copy's key
    after = detections(model, image, cache=True, monkeypatch=monkeypatch)
    gc.collect()
    assert old() is None       # released once the copy is made again for the new weight
    per_call = detections(model, image, cache=False, monkeypatch=monkeypatch)
    assert same(after, per_call) and not torch.equal(after["scores"][:10], before["scores"][:10])
