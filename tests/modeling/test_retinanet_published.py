"""The one-stage detectors' published names, offline (as test_published_weights.py: TORCH_HOME in a
temporary folder, a downloader that fails, random files planted under the publishers' file names
with their hash accepted): torchvision://retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2,
fcos_resnet50_fpn and detectron2://COCO-Detection/retinanet_R_50_FPN_1x|3x each load as the model
option they are, every planted tensor landing in the model, with the published AP listed."""
from functools import partial

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detector.weights import zoo
from detector.weights.loading import load_model
from tests.modeling.test_published_weights import accept_planted, hub, plant, torch_bytes  # noqa: F401 (fixture)
from tests.modeling.test_retinanet_detectron2 import retinanet_weights
from tests.modeling.test_detectron2_conversion import _write_zoo_file

FPN_DIM = 32


def torchvision_state(kind: str) -> dict:
    """torchvision's layout of `kind` (COCO's 91 outputs) on a ResNet-18 with a narrow FPN."""
    torch.manual_seed(0)
    v2 = kind == "retinanet_v2"
    body = torchvision.models.resnet18(weights=None, norm_layer=nn.BatchNorm2d if v2 else FrozenBatchNorm2d)
    extra = LastLevelP6P7(512 if v2 else FPN_DIM, FPN_DIM)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=extra)
    backbone.fpn.inner_blocks = nn.ModuleList(  # narrow FPN: torchvision's extractor is fixed at 256
        [type(b)(c, FPN_DIM, kernel_size=1, padding=0, norm_layer=None, activation_layer=None)
         for b, c in zip(backbone.fpn.inner_blocks, (128, 256, 512))])
    backbone.fpn.layer_blocks = nn.ModuleList(
        [type(b)(FPN_DIM, FPN_DIM, kernel_size=3, norm_layer=None, activation_layer=None)
         for b in backbone.fpn.layer_blocks])
    backbone.out_channels = FPN_DIM
    if kind == "fcos":
        return FCOS(backbone, 91).state_dict()
    head = RetinaNetHead(FPN_DIM, 9, 91, norm_layer=partial(nn.GroupNorm, 32) if v2 else None)
    return RetinaNet(backbone, 91, head=head).state_dict()


@pytest.mark.parametrize("name, kind, option, box_ap", [
    ("torchvision://retinanet_resnet50_fpn", "retinanet", "retinanet_fpn", "36.4"),
    ("torchvision://retinanet_resnet50_fpn_v2", "retinanet_v2", "retinanet_fpn_v2", "41.5"),
    ("torchvision://fcos_resnet50_fpn", "fcos", "fcos_fpn", "39.2"),
])
def test_torchvision_one_stage_names(hub, monkeypatch, name, kind, option, box_ap):
    assert name in zoo.published_names() and f"box AP {box_ap}" in zoo.lookup(name).metric
    planted = torchvision_state(kind)
    data = torch_bytes(planted)
    plant(name, data)
    accept_planted(monkeypatch, name, data)
    model = load_model(name)
    assert model.config.model.name == option and model.config.backbone.name == "resnet18"
    assert model.num_classes == 90 and model.config.model.class_names[0] == "person" and hub == []
    ours = model.state_dict()
    # torchvision's class 1 (person) of anchor 0 is this head's first logit channel.
    # (weights: torchvision starts every class bias at the same prior)
    torch.testing.assert_close(ours["head.cls_logits.weight"][0], planted["head.classification_head.cls_logits.weight"][1])
    torch.testing.assert_close(ours["head.cls_logits.weight"][89], planted["head.classification_head.cls_logits.weight"][90])
    torch.testing.assert_close(ours["backbone.fpn.p6.weight"], planted["backbone.fpn.extra_blocks.p6.weight"])
    assert sum(v.numel() for k, v in ours.items() if not k.endswith("num_batches_tracked")) == sum(
        v.numel() for k, v in planted.items() if not k.endswith("num_batches_tracked")) - (
        planted["head.classification_head.cls_logits.bias"].numel() // 91 * (FPN_DIM * 9 + 1))


@pytest.mark.parametrize("name, box_ap", [("detectron2://COCO-Detection/retinanet_R_50_FPN_1x", "37.4"),
                                          ("detectron2://COCO-Detection/retinanet_R_50_FPN_3x", "38.7")])
def test_detectron2_retinanet_names(hub, monkeypatch, tmp_path, name, box_ap):
    entry = zoo.lookup(name)
    assert name in zoo.published_names() and f"box AP {box_ap}" in entry.metric
    assert entry.url.endswith(("190397773/model_final_bfca0b.pkl", "190397829/model_final_5bd44e.pkl"))
    _write_zoo_file(tmp_path / "zoo.pkl", retinanet_weights())
    data = (tmp_path / "zoo.pkl").read_bytes()
    plant(name, data)
    accept_planted(monkeypatch, name, data)
    model = load_model(name)
    assert model.config.model.name == "retinanet_fpn" and model.config.model.input.format == "BGR"
    assert model.num_classes == 80 and model.config.backbone.stride_in_1x1 and hub == []
