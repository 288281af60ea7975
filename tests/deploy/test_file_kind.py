"""The runtime is chosen from the file's content: a TorchScript archive and a torch.save
checkpoint are both zip files, here both named model.pt, and are told apart by what the archive
holds; names say nothing (an ONNX file named .bin, a checkpoint named .torchscript)."""
from __future__ import annotations

import shutil

import torch


def test_torchscript_and_checkpoint_told_apart_by_content(exported, tmp_path):
    from detector.deploy import file_kind, is_exported_file, load_exported
    from detector.deploy.torchscript_runner import TorchScriptDetector

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    script, checkpoint = tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt"
    shutil.copy(exported["torchscript"], script)
    shutil.copy(exported["checkpoint"], checkpoint)
    assert file_kind(script) == "torchscript" and is_exported_file(script)
    assert file_kind(checkpoint) == "checkpoint" and not is_exported_file(checkpoint)
    assert isinstance(load_exported(script), TorchScriptDetector)

    misnamed = {"onnx": tmp_path / "graph.bin", "checkpoint": tmp_path / "weights.torchscript",
                "openvino": tmp_path / "model.txt"}
    shutil.copy(exported["onnx"], misnamed["onnx"])
    shutil.copy(exported["checkpoint"], misnamed["checkpoint"])
    shutil.copy(exported["openvino"], misnamed["openvino"])
    for kind, path in misnamed.items():
        assert file_kind(path) == kind, path


def test_other_weights_are_checkpoints(tmp_path):
    """safetensors, a legacy (non-zip) torch.save pickle, a published name and a missing file go
    to the checkpoint reader, which reports what is wrong with them."""
    from detector.deploy import file_kind
    from detector.weights.checkpoint_io import save_checkpoint

    state = {"model": {"w": torch.zeros(2)}, "iteration": 1}
    save_checkpoint(state, tmp_path / "m.safetensors")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for path in (tmp_path / "m.safetensors", tmp_path / "legacy.pt", "torchvision://fasterrcnn_resnet50_fpn",
                 tmp_path / "missing.onnx"):
        assert file_kind(path) == "checkpoint", path


def test_eval_and_predict_load_a_torchscript_file(exported, tmp_path):
    """The TorchScript file runs alone, its detections those of the checkpoint's model."""
    from detector.deploy import load_exported
    from detector.weights.loading import load_model

    image = torch.rand(3, 140, 190, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = load_model(exported["checkpoint"])([image])[0]
    got = load_exported(exported["torchscript"])([image])[0]
    assert len(got["scores"]) == len(expected["scores"]) > 0
    assert (got["boxes"] - expected["boxes"]).abs().max() <= 1e-3
