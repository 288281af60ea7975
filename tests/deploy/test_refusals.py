"""What cannot apply to an exported file is refused before any work, with a message naming the
setting and what to do: test-time augmentation, overrides of settings baked into the graph,
CUDA for OpenVINO and TorchScript, bf16 outside OpenVINO (and test.precision for a checkpoint),
a predict threshold below the baked one, an OpenVINO output not named .xml."""
from __future__ import annotations

import re

import pytest

from reliability_helpers import tiny  # on pytest.ini's pythonpath


def eval_only(tmp_path, weights, *extra):
    from detector.config import load_config
    from detector.engine.run import evaluate_checkpoint
    from detector.tasks.detection import DetectionTask

    cfg = load_config(tiny(tmp_path / "shapes", tmp_path / "out", "eval_only=true", f"model.weights={weights}", *extra))
    DetectionTask().check_config(cfg)
    return evaluate_checkpoint(cfg, DetectionTask(), [o for o in extra if o.startswith("model.")])


@pytest.mark.parametrize("fmt, extra, message", [
    ("onnx", ["test.aug=true"], r"test\.aug=true .*cannot apply to the exported file .*model\.onnx.*test\.aug=false"),
    ("openvino", ["model.roi_heads.score_thresh=0.5"],
     r"model\.roi_heads\.score_thresh=0\.5 \(the file has 0\.2\).*baked into its graph.*--set"),
    ("openvino", ["train.device=cuda"], r"device cuda .*OpenVINO runs this file on the CPU"),
    ("torchscript", ["train.device=cuda"], r"device cuda .*traced on the CPU"),
    ("onnx", ["test.precision=bf16"], r"test\.precision=bf16 applies to OpenVINO files.*onnx file"),
    ("checkpoint", ["test.precision=bf16"], r"test\.precision=bf16 sets an exported file's precision.*train\.amp"),
    ("onnx", ["test.precision=fp16"], r"test\.precision='fp16': use fp32 or bf16"),
])
def test_eval_only_refusals(exported, tmp_path, fmt, extra, message):
    from detector.engine.config_checks import ConfigError

    with pytest.raises(ConfigError, match=message):
        eval_only(tmp_path, exported[fmt], *extra)
    assert not (tmp_path / "shapes").exists(), "refused after the data was generated"


def test_an_override_equal_to_the_baked_setting_is_accepted(exported):
    from detector.deploy import read_metadata
    from detector.deploy.run_settings import changed_settings

    metadata = read_metadata(exported["onnx"])
    assert changed_settings(metadata, ["model.roi_heads.score_thresh=0.2", "model.input.min_size_test=160"]) == []
    assert changed_settings(metadata, ["model.roi_heads.nms_thresh=0.6"]) == [
        "model.roi_heads.nms_thresh=0.6 (the file has 0.5)"]


@pytest.mark.parametrize("fmt, args, message", [
    ("onnx", ["--tta"], r"--tta cannot apply to the exported file"),
    ("openvino", ["--score-thresh", "0.1"], r"--score-thresh 0\.1 is below the score threshold baked into .* \(0\.2\)"),
    ("openvino", ["--device", "cuda"], r"OpenVINO runs this file on the CPU"),
    ("torchscript", ["--precision", "bf16"], r"test\.precision=bf16 applies to OpenVINO files"),
    ("checkpoint", ["--precision", "bf16"], r"--precision bf16 applies to exported OpenVINO files"),
])
def test_predict_refusals(exported, tmp_path, capsys, fmt, args, message):
    import cv2
    import numpy as np

    from detector.cli.predict import main

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 50, 3), np.uint8))
    code = main(["--weights", str(exported[fmt]), "--input", str(tmp_path / "a.png"), "--output",
                 str(tmp_path / "out"), *args])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_openvino_output_must_be_xml(exported, tmp_path, capsys):
    from detector.cli.export import main

    assert main(["--weights", str(exported["checkpoint"]), "--format", "openvino", "--output",
                 str(tmp_path / "model.onnx")]) == 2
    assert "ending in .xml" in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--int8", "--output", "m.onnx"], r"--int8 applies to --format openvino .*not --format onnx"),
    (["--format", "torchscript", "--int8", "--output", "m.pt"], r"--int8 applies to --format openvino"),
    (["--format", "openvino", "--calibration", "dataset=bccd", "--output", "m.xml"],
     r"--calibration only applies with --int8.*add --int8"),
    (["--format", "openvino", "--calibration-images", "5", "--output", "m.xml"],
     r"--calibration-images only applies with --int8"),
    (["--format", "openvino", "--bias-correction", "fast", "--output", "m.xml"],
     r"--bias-correction only applies with --int8"),
    (["--format", "openvino", "--int8", "--calibration-images", "0", "--output", "m.xml"],
     r"--calibration-images 0: give at least 1"),
])
def test_int8_option_refusals(tmp_path, capsys, args, message):
    """Refused before any work: the checkpoint named does not even exist, and nothing is written."""
    from detector.cli.export import main

    args = [str(tmp_path / a) if a.startswith("m.") else a for a in args]
    assert main(["--weights", str(tmp_path / "absent.pth"), *args]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []
