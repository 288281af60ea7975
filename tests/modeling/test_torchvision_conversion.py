import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from detector.weights.coco_classes import COCO_IDS
from detector.weights.torchvision_conversion import (convert_torchvision_classification,
                                                     convert_torchvision_detection)


@pytest.fixture(scope="module")
def coco_layout_state():
    torch.manual_seed(0)
    return FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=91).state_dict()


def test_detection_layout_is_read_off_the_weights(coco_layout_state):
    state, backbone, model, num_classes, names = convert_torchvision_detection(coco_layout_state)
    assert backbone["name"] == "resnet18" and backbone["depth"] == 18 and backbone["norm"] == "frozen_bn"
    assert num_classes == 90 and names[0] == "person" and names[11] == "N/A" and names[12] == "stop sign"
    assert model["fpn"]["out_channels"] == 256 and model["roi_heads"]["fc_dim"] == 1024
    assert torch.equal(state["backbone.fpn.lateral_convs.3.0.weight"], coco_layout_state["backbone.fpn.inner_blocks.3.0.weight"])
    assert torch.equal(state["rpn.head.convs.0.weight"], coco_layout_state["rpn.head.conv.0.0.weight"])
    assert torch.equal(state["roi_heads.box_head.fc2.bias"], coco_layout_state["roi_heads.box_head.fc7.bias"])


def test_coco80_keeps_background_and_used_category_ids(coco_layout_state):
    state, _, _, num_classes, names = convert_torchvision_detection(coco_layout_state, coco80=True)
    assert num_classes == 80 and names[-1] == "toothbrush"
    cls = coco_layout_state["roi_heads.box_predictor.cls_score.weight"]
    box = coco_layout_state["roi_heads.box_predictor.bbox_pred.weight"]
    assert torch.equal(state["roi_heads.box_predictor.cls_score.weight"][0], cls[0])
    # Label 12 (stop sign) was torchvision's output 13 (its COCO category id).
    assert COCO_IDS[11] == 13
    assert torch.equal(state["roi_heads.box_predictor.cls_score.weight"][12], cls[13])
    assert torch.equal(state["roi_heads.box_predictor.bbox_pred.weight"][12 * 4:13 * 4], box[13 * 4:14 * 4])


def test_resnext_classifier_layout_is_inferred():
    state = torchvision.models.resnext50_32x4d(weights=None).state_dict()
    body, backbone = convert_torchvision_classification(state)
    assert backbone["name"] == "resnext50_32x4d" and backbone["groups"] == 32 and backbone["width_per_group"] == 4
    assert "fc.weight" not in body and "layer4.2.bn3.running_var" in body
