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


@pytest.fixture(scope="module")
def v2_state():
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    torch.manual_seed(0)
    return fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()


def test_v2_layout_is_recognised_and_renamed(v2_state):
    state, backbone, model, num_classes, names = convert_torchvision_detection(v2_state)
    assert model["name"] == "faster_rcnn_fpn_v2" and num_classes == 90 and names[0] == "person"
    assert backbone["name"] == "resnet50" and backbone["norm"] == "bn" and backbone["freeze_at"] == 2
    assert model["fpn"] == {"out_channels": 256, "norm": "bn"} and model["rpn"]["conv_depth"] == 2
    # The conv box head (4 convs + 1 fc, "conv4fc") is model=faster_rcnn_fpn_v2's box_head node.
    assert {k: model["roi_heads"][k] for k in ("conv_dim", "conv_norm", "fc_dim")} == {
        "conv_dim": 256, "conv_norm": "bn", "fc_dim": 1024}
    # torchvision's block i (conv i.0, BatchNorm i.1) is conv 3i, norm 3i+1 here (ReLU at 3i+2);
    # its Linear (after the Flatten at 4) is fc1.
    for block in range(4):
        assert torch.equal(state[f"roi_heads.box_head.convs.{3 * block}.weight"],
                           v2_state[f"roi_heads.box_head.{block}.0.weight"])
        assert torch.equal(state[f"roi_heads.box_head.convs.{3 * block + 1}.running_var"],
                           v2_state[f"roi_heads.box_head.{block}.1.running_var"])
    assert torch.equal(state["roi_heads.box_head.fc1.weight"], v2_state["roi_heads.box_head.5.weight"])
    assert torch.equal(state["backbone.fpn.output_convs.2.1.bias"], v2_state["backbone.fpn.layer_blocks.2.1.bias"])
    assert torch.equal(state["rpn.head.convs.1.weight"], v2_state["rpn.head.conv.1.0.weight"])
    assert not any(k.endswith("num_batches_tracked") for k in state)


def test_v2_checkpoint_rebuilds_v2(v2_state, tmp_path):
    """The one entry point (also used for weights by name): the checkpoint carries a config
    that load_model turns back into the v2 model, with COCO category ids."""
    from detector.weights.checkpoint_io import save_checkpoint
    from detector.weights.loading import load_model
    from detector.weights.torchvision_conversion import checkpoint_from_torchvision

    checkpoint = checkpoint_from_torchvision(v2_state)
    assert checkpoint["config"]["model"]["name"] == "faster_rcnn_fpn_v2" and checkpoint["category_ids"][:2] == [1, 2]
    save_checkpoint(checkpoint, tmp_path / "v2.pth")
    model = load_model(tmp_path / "v2.pth")
    box_head = model.config.model.roi_heads.box_head   # conv4fc: four convs and one fc
    assert box_head._target_ == "detector.modeling.roi_heads.ConvFCBoxHead" and box_head.num_convs == 4
    assert model.config.model.fpn.norm == "bn"
    assert torch.equal(model.state_dict()["roi_heads.box_head.convs.4.weight"], v2_state["roi_heads.box_head.1.1.weight"])


def test_unsupported_conv_box_head_is_refused(v2_state):
    three_blocks = {k: v for k, v in v2_state.items() if not k.startswith("roi_heads.box_head.3.")}
    with pytest.raises(ValueError, match=r"conv blocks \[0, 1, 2\].*only the 4conv1fc head"):
        convert_torchvision_detection(three_blocks)
