"""safetensors checkpoints: written atomically and fsynced like .pth, and a flipped bit in the
tensors, or a tensor renamed, retyped or reshaped in the header, is reported as damage (a
checksum in the header, verified on load)."""
import json
import os
import struct

import pytest
import torch

from detector.weights.checkpoint_io import CheckpointError, load_checkpoint, read_checkpoint
from detector.weights.formats.safetensors_file import CHECKSUM_KEY, export_safetensors, read_safetensors


def small_checkpoint():
    generator = torch.Generator().manual_seed(0)
    return {
        "model": {
            "conv.weight": torch.randn(8, 3, 3, 3, generator=generator),
            "conv.bias": torch.randn(8, generator=generator),
            "bn.num_batches_tracked": torch.tensor(5),
            "half": torch.randn(4, 4, generator=generator).to(torch.bfloat16),
        },
        "iteration": 12,
        "config": {"model": {"num_classes": 3}},
        "category_ids": [1, 5, 9],
    }


def data_region_start(path) -> int:
    """safetensors layout: an 8-byte little-endian header length, the JSON header, the tensor bytes."""
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + header_len


def test_clean_file_round_trips_with_its_checksum(tmp_path):
    checkpoint = small_checkpoint()
    path = export_safetensors(checkpoint, tmp_path / "model.safetensors")
    tensors, metadata = read_safetensors(path)
    assert len(metadata[CHECKSUM_KEY]) == 64   # a sha256 hex digest
    assert set(tensors) == set(checkpoint["model"])
    for name, value in checkpoint["model"].items():
        assert tensors[name].dtype == value.dtype and torch.equal(tensors[name], value), name
    record = read_checkpoint(path)
    assert record.iteration == 12 and record.stored_config == checkpoint["config"]
    assert record.category_ids == [1, 5, 9]


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])   # first, middle and last byte of the tensor data
def test_a_flipped_bit_in_the_tensor_data_is_reported_as_damage(tmp_path, where):
    path = export_safetensors(small_checkpoint(), tmp_path / "model.safetensors")
    data = bytearray(path.read_bytes())
    start = data_region_start(path)
    position = start + round(where * (len(data) - 1 - start))
    data[position] ^= 0x10
    path.write_bytes(bytes(data))
    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError) as error:
            load(path)
        assert str(path) in str(error.value) and "damaged" in str(error.value)


def edit_header(path, old: bytes, new: bytes) -> None:
    """Replace `old` by `new` (as long) in the file's JSON header: the tensor data and every
    offset stay valid, so safetensors itself reads the edited file without complaint."""
    assert len(old) == len(new)
    data = path.read_bytes()
    header = data[:data_region_start(path)]
    assert header.count(old) == 1, (old, header)
    path.write_bytes(header.replace(old, new) + data[len(header):])


# Header edits that leave every data byte as it was. Names sort as before ("conv.biaz" still
# comes before "conv.weight"), so a checksum of the data bytes alone, in name order, would not
# change; bfloat16 and float16 are both 2 bytes, [4,4] and [2,8] both 16 elements.
HEADER_EDITS = {
    "renamed": (b'"conv.bias":', b'"conv.biaz":'),
    "bf16_read_as_fp16": (b'"half":{"dtype":"BF16"', b'"half":{"dtype": "F16"'),
    "reshaped": (b'"half":{"dtype":"BF16","shape":[4,4]', b'"half":{"dtype":"BF16","shape":[2,8]'),
}


@pytest.mark.parametrize("edit", sorted(HEADER_EDITS))
def test_a_tensor_renamed_retyped_or_reshaped_in_the_header_is_reported_as_damage(tmp_path, edit):
    """The checksum covers each tensor's name, dtype and shape, not only its bytes: a header
    damaged into another valid header must not load as other (or differently read) weights."""
    from safetensors import safe_open

    path = export_safetensors(small_checkpoint(), tmp_path / "model.safetensors")
    edit_header(path, *HEADER_EDITS[edit])
    with safe_open(str(path), framework="pt") as handle:   # still a valid file to safetensors
        assert len(list(handle.keys())) == 4
    for load in (read_checkpoint, load_checkpoint, read_safetensors):
        with pytest.raises(CheckpointError) as error:
            load(path)
        message = str(error.value)
        assert str(path) in message and "damaged" in message and "names, dtypes, shapes" in message, message


def test_files_without_a_checksum_still_load(tmp_path):
    """Files written before the checksum existed (plain safetensors.save_file) load as before."""
    from safetensors.torch import save_file

    checkpoint = small_checkpoint()
    path = tmp_path / "old.safetensors"
    save_file(checkpoint["model"], str(path), metadata={"iteration": "3", "config": json.dumps(checkpoint["config"])})
    record = read_checkpoint(path)
    assert record.iteration == 3 and record.stored_config == checkpoint["config"]
    assert torch.equal(record.state["conv.weight"], checkpoint["model"]["conv.weight"])


def test_written_atomically_fsynced_and_no_temporary_file_left(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    folder = tmp_path / "out"
    path = export_safetensors(small_checkpoint(), folder / "model.safetensors")
    assert len(synced) >= 2   # the file's bytes, then the folder (the rename)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    assert read_safetensors(path)[0]["conv.bias"].shape == (8,)


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = export_safetensors(small_checkpoint(), tmp_path / "model.safetensors")
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        export_safetensors({"model": {"w": torch.zeros(2)}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
