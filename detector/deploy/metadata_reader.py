"""The one reader of an exported file's metadata (written by detector.export: ONNX
metadata_props, OpenVINO rt_info, a TorchScript archive's extra file) into one ExportMetadata."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from detector.deploy.file_kind import ONNX, OPENVINO, TORCHSCRIPT, file_kind
from detector.export.metadata import ExportMetadata, MetadataError
from detector.export.openvino_export import RT_INFO_SECTION, import_openvino
from detector.export.torchscript_export import METADATA_FILE


def read_metadata(path: str | os.PathLike) -> ExportMetadata:
    """The metadata of an exported file; MetadataError when it has none (or is no exported file)."""
    kind = file_kind(path)
    if kind == ONNX:
        entries = onnx_entries(path)
    elif kind == OPENVINO:
        entries = openvino_entries(path)
    elif kind == TORCHSCRIPT:
        entries = torchscript_entries(path)
    else:
        raise MetadataError(f"'{path}' is not an exported file (ONNX, OpenVINO .xml or TorchScript).")
    return ExportMetadata.from_strings(entries, str(path))


def onnx_entries(path: str | os.PathLike) -> dict[str, str]:
    try:
        import onnx
    except ModuleNotFoundError:
        raise ImportError("reading an ONNX file needs the 'onnx' package: pip install -e '.[deploy]'.") from None
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def openvino_entries(path: str | os.PathLike, model=None) -> dict[str, str]:
    """`model`: the openvino.Model already read from `path`, when there is one."""
    if model is None:
        model = import_openvino().Core().read_model(str(path))
    if not model.has_rt_info([RT_INFO_SECTION]):
        return {}
    return {key: value.astype(str) for key, value in model.get_rt_info([RT_INFO_SECTION]).astype(dict).items()}


def torchscript_entries(path: str | os.PathLike) -> dict[str, str]:
    with zipfile.ZipFile(Path(path)) as archive:
        member = next((n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_FILE}")), None)
        return json.loads(archive.read(member)) if member else {}
