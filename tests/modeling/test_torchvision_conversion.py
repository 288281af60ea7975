import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from detector.weights.conversion.coco_classes import COCO_IDS
from detector.weights.conversion.torchvision_conversion import (convert_torchvision_classification,
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
    from detector.weights.conversion.torchvision_conversion import checkpoint_from_torchvision

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


# ---------------------------------------------------------------- Mask R-CNN
@pytest.fixture(scope="module")
def mask_states():
    from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2

    torch.manual_seed(0)
    return {"v1": maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(),
            "v2": maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_mask_rcnn_layout_is_recognised_and_kept(mask_states, version):
    """maskrcnn_resnet50_fpn(_v2): the box part converts as fasterrcnn_resnet50_fpn(_v2) does; the
    mask modules keep torchvision's names; the config names mask_rcnn_fpn(_v2)."""
    original = mask_states[version]
    state, backbone, model, num_classes, names = convert_torchvision_detection(original)
    v2 = version == "v2"
    assert model["name"] == ("mask_rcnn_fpn_v2" if v2 else "mask_rcnn_fpn") and num_classes == 90
    assert model["roi_heads"]["mask_head"] == {"conv_dim": 256, "num_convs": 4, "norm": "bn" if v2 else ""}
    assert model["roi_heads"]["mask_deconv_dim"] == 256 and backbone["norm"] == ("bn" if v2 else "frozen_bn")
    mask_keys = [k for k in original if ".mask_" in k and not k.endswith("num_batches_tracked")]
    assert len(mask_keys) == (24 if v2 else 12)   # 4 convs (+ 4 BatchNorm buffers each in v2), deconv, logits
    for key in mask_keys:
        assert torch.equal(state[key], original[key]), key
    if v2:
        assert torch.equal(state["roi_heads.box_head.fc1.weight"], original["roi_heads.box_head.5.weight"])


def test_legacy_mask_head_names_convert(mask_states):
    """Releases before Conv2dNormActivation (the published maskrcnn_resnet50_fpn file) name the
    mask convs mask_fcn1..4."""
    original = mask_states["v1"]
    import re

    legacy = {re.sub(r"mask_head\.(\d)\.0\.", lambda m: f"mask_head.mask_fcn{int(m[1]) + 1}.", k): v
              for k, v in original.items()}
    assert "roi_heads.mask_head.mask_fcn4.bias" in legacy and "roi_heads.mask_head.3.0.bias" not in legacy
    state = convert_torchvision_detection(legacy)[0]
    assert torch.equal(state["roi_heads.mask_head.3.0.bias"], original["roi_heads.mask_head.3.0.bias"])
    assert state.keys() == convert_torchvision_detection(original)[0].keys()


def test_coco80_and_new_class_count_cover_the_mask_logits(mask_states):
    from detector.weights.conversion.torchvision_conversion import checkpoint_from_torchvision

    original = mask_states["v1"]
    logits = original["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    state, _, _, num_classes, _ = convert_torchvision_detection(original, coco80=True)
    assert num_classes == 80 and state["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 81
    # Label 12 (stop sign) was torchvision's output 13, for the masks as for the boxes.
    assert torch.equal(state["roi_heads.mask_predictor.mask_fcn_logits.weight"][12], logits[13])
    checkpoint = checkpoint_from_torchvision(original, num_classes=3)
    weights = checkpoint["model"]
    assert weights["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 4
    assert weights["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    # The mask deconvolution is not per class: kept.
    assert torch.equal(weights["roi_heads.mask_predictor.conv5_mask.weight"],
                       original["roi_heads.mask_predictor.conv5_mask.weight"])
    assert checkpoint["config"]["model"]["num_classes"] == 3


def test_mask_v2_checkpoint_rebuilds_mask_rcnn_fpn_v2(mask_states, tmp_path):
    from detector.weights.checkpoint_io import save_checkpoint
    from detector.weights.conversion.torchvision_conversion import checkpoint_from_torchvision

    original = mask_states["v2"]
    save_checkpoint(checkpoint_from_torchvision(original), tmp_path / "mask_v2.pth")
    from detector.weights.loading import load_model

    model = load_model(tmp_path / "mask_v2.pth")
    assert model.config.model.name == "mask_rcnn_fpn_v2" and model.config.model.fpn.norm == "bn"
    assert type(model.roi_heads.box_head).__name__ == "ConvFCBoxHead" and len(model.rpn.head.convs) == 2
    assert torch.equal(model.roi_heads.mask_head[2][1].running_var, original["roi_heads.mask_head.2.1.running_var"])


def test_mask_logits_for_another_class_count_are_refused(mask_states):
    broken = dict(mask_states["v1"])
    broken["roi_heads.mask_predictor.mask_fcn_logits.weight"] = broken["roi_heads.mask_predictor.mask_fcn_logits.weight"][:1]
    broken["roi_heads.mask_predictor.mask_fcn_logits.bias"] = broken["roi_heads.mask_predictor.mask_fcn_logits.bias"][:1]
    with pytest.raises(ValueError, match="mask predictor has 1 outputs but the box predictor 91"):
        convert_torchvision_detection(broken)
