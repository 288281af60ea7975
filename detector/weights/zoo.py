"""Layer 4 of detector.weights: published weights by name, and their download cache.

A name (`torchvision://...`, `detectron2://...`, or `<scheme>://...` of any registered weights
source) stands wherever a weights path is accepted (model.weights=, backbone.weights=,
--weights, load_model, convert_weights --input). It is resolved in four steps:

1. the source whose scheme the name has gives the publisher's URL and hash (the registry,
   detector/weights/conversion/registry.py; torchvision file names end in
   `-<sha256 prefix>.pth`, Detectron2's model-zoo files in `_<md5 prefix>.pkl`, the MSRA
   ImageNet ResNets have none);
2. the file is looked for in the torch hub cache, `torch.hub.get_dir()/checkpoints/<file name>`
   (under TORCH_HOME), and downloaded there only when absent: offline, a file placed there is used;
3. its hash is checked every time it is used (once per process): a damaged download or a
   different file under that name is refused;
4. it is converted to this project's format once, by the conversion entry point
   (detector/weights/conversion/convert.py); the conversion sits next to it, named after the
   file's own sha256, so a different file under the same name is converted anew.

This module sits above conversion: it calls it, and conversion never resolves a name.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from detector.weights.conversion.convert import convert_file
from detector.weights.conversion.registry import (  # noqa: F401 - PublishedWeights: the entries' type, named here too
    PublishedWeights,
    PublishedWeightsError,
    WeightsSource,
    registered_sources,
    source_of_published_name,
)

logger = logging.getLogger(__name__)

DOWNLOAD_SOCKET_TIMEOUT_S = 60

# Bump when the converted files this module writes change, so old conversions are redone.
CONVERSION_VERSION = 1


def is_published_name(value) -> bool:
    """Whether `value` is a name with the scheme of a registered source (torchvision://...)."""
    return isinstance(value, (str, os.PathLike)) and source_of_published_name(value) is not None


def published_names() -> list[str]:
    """Every name the registered sources publish, short forms first (for messages and docs)."""
    return [name for source in registered_sources() for name in source.published_names()]


def find_published(value) -> tuple[WeightsSource, PublishedWeights] | None:
    """The source and entry of a published name, looked up once; None for a path;
    PublishedWeightsError naming the known names for an unknown one."""
    source = source_of_published_name(value) if isinstance(value, (str, os.PathLike)) else None
    if source is None:
        return None
    name = str(value)
    entry = source.published(name[len(source.scheme):])
    if entry is None:
        raise _unknown(name)
    return source, entry


def _unknown(name: str) -> PublishedWeightsError:
    return PublishedWeightsError(f"Unknown published weights '{name}'. Known names: {', '.join(published_names())} "
                                 "(torchvision ResNets also take a version, e.g. torchvision://resnet50.IMAGENET1K_V2).")


def lookup(name: str | os.PathLike) -> PublishedWeights:
    """The entry of a published-weights name; PublishedWeightsError naming the known ones otherwise."""
    found = find_published(str(name))
    if found is None:
        raise _unknown(str(name))
    return found[1]


def weights_setting_problem(value) -> str | None:
    """What is wrong with a weights setting, found before any work starts: a path that does not
    exist, or an unknown published name. None when it can be used (a known name's file is fetched
    when the weights are loaded)."""
    if is_published_name(value):
        try:
            lookup(value)
        except PublishedWeightsError as error:
            return str(error)
        return None
    return None if Path(str(value)).is_file() else f"'{value}' does not exist (a file, or a published name: see docs/model_zoo.md)."


def cache_dir() -> Path:
    """torch.hub's checkpoint folder: $TORCH_HOME/hub/checkpoints (~/.cache/torch/... by default)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(entry: PublishedWeights) -> Path:
    return cache_dir() / entry.file_name


def _download(url: str, destination: Path) -> None:
    """Download to `destination` (torch.hub writes a temporary file and renames it when complete)."""
    import socket

    import torch.hub

    destination.parent.mkdir(parents=True, exist_ok=True)
    # urllib waits forever by default: a firewall that drops packets would hang the run
    # instead of printing where to put the file. This bounds each connect and read, not the download.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S if previous is None else previous)
    try:
        torch.hub.download_url_to_file(url, str(destination), hash_prefix=None, progress=True)
    finally:
        socket.setdefaulttimeout(previous)


_digests: dict[tuple, dict[str, str]] = {}


def file_digests(path: Path) -> dict[str, str]:
    """{"sha256": hex, "md5": hex} of a file, read once; remembered per (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                for digest in hashes.values():
                    digest.update(chunk)
        _digests[key] = {algorithm: digest.hexdigest() for algorithm, digest in hashes.items()}
    return _digests[key]


def _check_hash(entry: PublishedWeights, path: Path, downloaded: bool) -> dict[str, str]:
    digests = file_digests(path)
    if entry.hash_algorithm is None or digests[entry.hash_algorithm].startswith(entry.hash_prefix):
        return digests
    found = digests[entry.hash_algorithm][: max(len(entry.hash_prefix), 8)]
    if downloaded:
        path.unlink(missing_ok=True)   # never leave a bad download where it would be picked up
        what = f"The download of {entry.url} has {entry.hash_algorithm} {found}..., not the published {entry.hash_prefix}...; it was deleted. Run again to retry."
    else:
        what = (f"'{path}' (for {entry.name}) has {entry.hash_algorithm} {found}..., but the published file's starts "
                f"with {entry.hash_prefix}: it is damaged or another file. Delete it and run again to download it, "
                f"or replace it with the file from {entry.url}.")
    raise PublishedWeightsError(what)


def fetch(entry: PublishedWeights) -> tuple[Path, dict[str, str]]:
    """The published file in the cache (downloaded if absent) and its digests, hash checked."""
    path = cached_file(entry)
    downloaded = False
    if not path.is_file():
        logger.info("Downloading %s from %s to %s", entry.name, entry.url, path)
        try:
            _download(entry.url, path)
        except Exception as error:  # noqa: BLE001 - every failure gets the same advice
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            raise PublishedWeightsError(
                f"{entry.name} is not in the cache and could not be downloaded ({reason}). Download {entry.url} "
                f"and place it at {path} (the folder follows TORCH_HOME), then run again.") from None
        if not path.is_file():
            raise PublishedWeightsError(f"Downloading {entry.url} left no file at {path}; place the file there "
                                        "by hand and run again.")
        downloaded = True
    return path, _check_hash(entry, path, downloaded)


def publisher_file(value: str | os.PathLike, source: str) -> Path:
    """The file to convert with `--source source`: for a published name, the publisher's own
    file, fetched into the cache and hash checked (refused when another source publishes it);
    a path is returned as given."""
    if not is_published_name(value):
        return Path(value)
    entry = lookup(value)
    if entry.source != source:
        raise ValueError(f"{entry.name} is a {entry.source} file: use --source {entry.source}.")
    return fetch(entry)[0]


def converted_file(entry: PublishedWeights, raw: Path, sha256: str) -> Path:
    stem = raw.name.rsplit(".", 1)[0]
    return raw.with_name(f"{stem}.detector-v{CONVERSION_VERSION}-{sha256[:12]}.pth")


_KIND_ADVICE = {
    "detector": "it holds a whole detector: pass it as model.weights={name} (or --weights)",
    "backbone": "it holds ImageNet backbone weights: pass it as backbone.weights={name}",
}


def resolve_weights(value: str | os.PathLike, expect: str | None = None) -> Path:
    """A local file for `value`: a path is returned as given; a published name is fetched,
    checked and converted (see the module docstring), and the converted file returned.
    `expect` ("detector" or "backbone") refuses a name of the other kind with the fix."""
    found = find_published(value)
    if found is None:
        return Path(value)
    source, entry = found
    if expect is not None and entry.kind != expect:
        raise PublishedWeightsError(f"'{value}' cannot be used here: " + _KIND_ADVICE[entry.kind].format(name=value) + ".")
    raw, digests = fetch(entry)
    output = converted_file(entry, raw, digests["sha256"])
    if not output.is_file():
        logger.info("Converting %s (%s) to %s", entry.name, raw, output)
        # The conversion is written atomically: several processes may race here, and each
        # one's rename leaves a complete file. The source found for the name converts it
        # (entry.source names it; the object is handed down rather than looked up again).
        convert_file(source, raw, output)
    return output
