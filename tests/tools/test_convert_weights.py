"""tools/convert_weights.py from the command line (one real subprocess; the rest call main())."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from detector.weights.checkpoint_io import load_checkpoint
from detector.config import load_config
from detector.modeling.build import build_model
from detector.weights.loading import load_initial_weights, load_model

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_weights.py"


def run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=300)


def tool_main(*args) -> int:
    spec = importlib.util.spec_from_file_location("convert_weights_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def test_imagenet_classifier_becomes_backbone_weights(tmp_path):
    torch.manual_seed(0)
    classifier = torchvision.models.resnet18(weights=None)
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pth")
    result = run_tool("--source", "torchvision", "--input", tmp_path / "resnet18.pth", "--output", tmp_path / "r18.pth")
    assert result.returncode == 0, result.stderr
    checkpoint = load_checkpoint(tmp_path / "r18.pth")
    assert checkpoint["config"]["backbone"]["name"] == "resnet18"
    assert not any(k.startswith("fc.") for k in checkpoint["model"])
    cfg = load_config(["backbone=resnet18", f"backbone.weights={tmp_path / 'r18.pth'}", "model.num_classes=3"])
    model = build_model(cfg)
    load_initial_weights(model, cfg)
    assert torch.equal(model.backbone.body.layer3[1].conv2.weight, classifier.layer3[1].conv2.weight)


def test_detector_with_new_class_count_loads_without_flags(tmp_path, capsys):
    torch.manual_seed(0)
    reference = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=91)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    code = tool_main("--source", "torchvision", "--input", tmp_path / "tv.pth", "--output", tmp_path / "out.pth",
                     "--num-classes", 3)
    assert code == 0, capsys.readouterr().err
    model = load_model(tmp_path / "out.pth")
    assert model.num_classes == 3 and model.roi_heads.box_predictor.cls_score.out_features == 4
    assert torch.equal(model.backbone.fpn.output_convs[2][0].weight, reference.backbone.fpn.layer_blocks[2][0].weight)


def test_bad_inputs_fail_with_a_message(tmp_path, capsys):
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pth")
    assert tool_main("--source", "torchvision", "--input", tmp_path / "other.pth", "--output", tmp_path / "o.pth") == 1
    assert "neither a torchvision Faster/Mask R-CNN" in capsys.readouterr().err
    assert tool_main("--source", "detectron2", "--input", tmp_path / "missing.pkl", "--output", tmp_path / "o.pth") == 1
    assert "do not exist" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()


def test_mask_rcnn_state_dict_converts_from_the_command_line(tmp_path, capsys):
    """torchvision's Mask R-CNN layout (here on a ResNet-18) through the tool: the output names
    model=mask_rcnn_fpn and loads with nothing else; --coco80 keeps the mask logits' rows too."""
    from torchvision.models.detection import MaskRCNN

    torch.manual_seed(0)
    reference = MaskRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=91)
    torch.save(reference.state_dict(), tmp_path / "mask.pth")
    code = tool_main("--source", "torchvision", "--input", tmp_path / "mask.pth", "--output", tmp_path / "mask80.pth",
                     "--coco80")
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    model = load_model(tmp_path / "mask80.pth")
    assert model.config.model.name == "mask_rcnn_fpn" and model.num_classes == 80
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 81
    assert torch.equal(model.roi_heads.mask_head[3][0].weight, reference.roi_heads.mask_head[3][0].weight)
    assert torch.equal(model.roi_heads.mask_predictor.mask_fcn_logits.weight[1],
                       reference.roi_heads.mask_predictor.mask_fcn_logits.weight[1])   # person: id 1, label 1
