"""The iteration a checkpoint was written at, read the same from a .pth and a .safetensors file
(whose header metadata carries it), and absent (None) for bare weights."""
import json

import pytest
import torch

from detector.weights.checkpoint_io import (CheckpointError, checkpoint_iteration, load_checkpoint, read_checkpoint,
                                           save_checkpoint)
from detector.weights.formats.safetensors_file import export_safetensors


def checkpoint(iteration: int = 1234) -> dict:
    return {"model": {"w": torch.arange(6.0).view(2, 3)}, "iteration": iteration,
            "config": {"model": {"num_classes": 2}}, "category_ids": [3, 7]}


@pytest.mark.parametrize("iteration", [0, 1234])
def test_the_iteration_of_a_pth_and_of_a_safetensors_file_is_the_one_written(tmp_path, iteration):
    pth = save_checkpoint(checkpoint(iteration), tmp_path / "model.pth")
    safe = export_safetensors(checkpoint(iteration), tmp_path / "model.safetensors")
    assert checkpoint_iteration(pth) == checkpoint_iteration(safe) == iteration
    assert checkpoint_iteration(str(safe)) == iteration   # a path given as text, as configs give it


def test_bare_weights_record_no_iteration(tmp_path):
    from safetensors.torch import save_file

    torch.save({"w": torch.zeros(2)}, tmp_path / "bare.pth")   # a bare state dict (e.g. a torchvision file)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "bare.safetensors"))   # no metadata at all
    assert checkpoint_iteration(tmp_path / "bare.pth") is None
    assert checkpoint_iteration(tmp_path / "bare.safetensors") is None


def test_a_safetensors_file_loads_as_the_dict_its_pth_twin_holds(tmp_path):
    """load_checkpoint, which every weights reader goes through, gives a .safetensors file's
    iteration, config and class ids, not only its tensors."""
    written = checkpoint(77)
    loaded = load_checkpoint(export_safetensors(written, tmp_path / "model.safetensors"))
    assert set(loaded) == {"model", "iteration", "config", "category_ids"}
    assert loaded["iteration"] == 77 and loaded["config"] == written["config"] and loaded["category_ids"] == [3, 7]
    assert torch.equal(loaded["model"]["w"], written["model"]["w"])
    twin = load_checkpoint(save_checkpoint(written, tmp_path / "model.pth"))
    assert {k: v for k, v in loaded.items() if k != "model"} == {k: v for k, v in twin.items() if k != "model"}


def test_unreadable_iteration_or_missing_file_is_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "edited.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"iteration": "12k", "config": json.dumps({})})
    for read in (checkpoint_iteration, load_checkpoint, read_checkpoint):
        with pytest.raises(CheckpointError, match=r"edited\.safetensors' records iteration '12k'.*whole number"):
            read(path)
    with pytest.raises(CheckpointError, match=r"missing\.safetensors' does not exist"):
        checkpoint_iteration(tmp_path / "missing.safetensors")
