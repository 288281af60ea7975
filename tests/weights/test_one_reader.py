"""The one reader (detector/weights/checkpoint_io.py): any format -> one record, the formats
agreeing on what a file records; and the one writer, which picks the format by the suffix."""
import struct

import pytest
import torch
from safetensors.torch import save_file

from detector.weights.checkpoint_io import CheckpointError, read_checkpoint, save_checkpoint


def state() -> dict:
    return {"conv.weight": torch.arange(12.0).view(3, 4), "bn.num_batches_tracked": torch.tensor(3)}


def test_bare_weights_read_alike_from_pth_and_safetensors(tmp_path):
    """A bare state dict records no iteration, config or class ids in either format (the
    safetensors reader once said iteration 0 where the .pth reader said nothing)."""
    torch.save(state(), tmp_path / "bare.pth")
    save_file(state(), str(tmp_path / "bare.safetensors"))
    records = [read_checkpoint(tmp_path / name) for name in ("bare.pth", "bare.safetensors")]
    for record in records:
        assert record.iteration is None and record.stored_config is None and record.config is None
        assert record.category_ids is None
        assert torch.equal(record.state["conv.weight"], state()["conv.weight"])
    assert records[0].state.keys() == records[1].state.keys()


def test_the_stored_config_is_upgraded_and_kept_as_written(tmp_path):
    """record.config is today's layout (config_upgrade); record.stored_config what the file holds."""
    old = {"backbone": {"depth": 18}, "model": {"name": "resnet_classifier", "num_classes": 3}}
    record = read_checkpoint(save_checkpoint({"model": state(), "iteration": 5, "config": old}, tmp_path / "old.pth"))
    assert record.stored_config == old
    assert record.config["backbone"]["_target_"] == "detector.modeling.backbone.resnet.ResNet"
    assert record.config["model"]["_target_"] == "detector.modeling.classifier.build_resnet_classifier"
    assert record.iteration == 5


def test_the_writer_picks_safetensors_by_the_suffix(tmp_path):
    written = {"model": state(), "iteration": 9, "config": {"model": {"num_classes": 2}}, "category_ids": [4, 8]}
    path = save_checkpoint(written, tmp_path / "model.safetensors")
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert path.read_bytes()[8:9] == b"{" and header_len < path.stat().st_size   # safetensors, not a torch zip
    record = read_checkpoint(path)
    assert (record.iteration, record.stored_config, record.category_ids) == (9, written["config"], [4, 8])
    assert torch.equal(record.state["conv.weight"], written["model"]["conv.weight"])


def test_what_safetensors_cannot_hold_is_refused_not_dropped(tmp_path):
    training = {"model": state(), "iteration": 1, "optimizer": {"state": {}}}
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*\['optimizer'\].*Write it as \.pth"):
        save_checkpoint(training, tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


def test_a_file_without_a_state_dict_is_named(tmp_path):
    path = save_checkpoint({"model": {"w": [1, 2]}, "iteration": 0}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd\.pth' holds no state dict"):
        read_checkpoint(path).state
