"""What kind of file a weights path names, from its bytes: an exported ONNX graph, an
OpenVINO IR, a TorchScript archive, or a checkpoint (anything else: .pth, .safetensors, a
published name such as torchvision://..., a missing file -- the checkpoint reader's errors
then say what is wrong with it).

By content because names lie: torch.jit.save and torch.save both write zip archives, and both
are called model.pt. The archives differ inside: TorchScript's holds the traced code
(`<archive>/code/...`) and its constants (`<archive>/constants.pkl`), a checkpoint's only
pickled data (`<archive>/data.pkl`, `<archive>/data/N`).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

ONNX, OPENVINO, TORCHSCRIPT, CHECKPOINT = "onnx", "openvino", "torchscript", "checkpoint"
EXPORTED_KINDS = (ONNX, OPENVINO, TORCHSCRIPT)
ZIP_MAGIC = b"PK\x03\x04"
# ModelProto's first fields, serialized in field order: ir_version (1, varint, tag 0x08), then one
# of producer_name .. graph (2-7), each a length-delimited string or message except model_version.
ONNX_SECOND_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A}


def file_kind(path: str | os.PathLike) -> str:
    """onnx, openvino, torchscript or checkpoint (see the module's docstring)."""
    path = Path(str(path))
    if "://" in str(path) or not path.is_file():
        return CHECKPOINT
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(ZIP_MAGIC):
        return TORCHSCRIPT if is_torchscript_archive(path) else CHECKPOINT
    if head.lstrip().startswith(b"<?xml") or head.lstrip().startswith(b"<net"):
        return OPENVINO if b"<net" in head else CHECKPOINT
    if looks_like_safetensors(head):
        return CHECKPOINT
    if looks_like_onnx(head):
        return ONNX
    return CHECKPOINT


def is_exported_file(path: str | os.PathLike) -> bool:
    return file_kind(path) in EXPORTED_KINDS


def is_torchscript_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False   # a damaged zip: the checkpoint reader reports it
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


def looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header."""
    return len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def looks_like_onnx(head: bytes) -> bool:
    if len(head) < 3 or head[0] != 0x08:
        return False
    index = 1
    while index < len(head) and head[index] & 0x80:   # ir_version's varint
        index += 1
    return index + 1 < len(head) and head[index + 1] in ONNX_SECOND_TAGS
