"""Published weights by name: `torchvision://...` and `detectron2://...`.

A name stands wherever a weights path is accepted (model.weights=, backbone.weights=,
--weights, load_model, convert_weights --input). It is resolved in four steps:

1. the registry below gives its URL and the hash its publisher gives (torchvision file
   names end in `-<sha256 prefix>.pth`; Detectron2's model-zoo files in `_<md5 prefix>.pkl`;
   the MSRA ImageNet ResNets have none);
2. the file is looked for in the torch hub cache, `torch.hub.get_dir()/checkpoints/<file name>`
   (under TORCH_HOME), and downloaded there only when absent: offline, a file placed there is used;
3. its hash is checked every time it is used (once per process): a damaged download or a
   different file under that name is refused;
4. it is converted to this project's format once; the conversion sits next to it, named
   after the file's own sha256, so a different file under the same name is converted anew.

torchvision entries are read from torchvision's own weight enums, so URLs, hashes and
published accuracies are those of the installed torchvision.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from detector.weights.checkpoint_io import CheckpointError

logger = logging.getLogger(__name__)

SCHEMES = ("torchvision://", "detectron2://")

DOWNLOAD_SOCKET_TIMEOUT_S = 60

# Bump when the converted files this module writes change, so old conversions are redone.
CONVERSION_VERSION = 1

# torchvision detectors by name -> the weights enum member (COCO_V1 is the only one published).
TORCHVISION_DETECTORS = {
    "fasterrcnn_resnet50_fpn": "COCO_V1",
    "fasterrcnn_resnet50_fpn_v2": "COCO_V1",
    "maskrcnn_resnet50_fpn": "COCO_V1",       # -> model=mask_rcnn_fpn
    "maskrcnn_resnet50_fpn_v2": "COCO_V1",    # -> model=mask_rcnn_fpn_v2
}
TORCHVISION_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                         "resnext50_32x4d", "resnext101_32x8d")
# V1, not torchvision's DEFAULT (V2 where it exists): torchvision's detection models,
# fasterrcnn_resnet50_fpn and _v2 included, were trained from the V1 ImageNet weights,
# so the detection recipes of conf/ match them. `torchvision://resnet50.IMAGENET1K_V2` picks V2.
TORCHVISION_BACKBONE_DEFAULT = "IMAGENET1K_V1"

DETECTRON2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"
# Detectron2 model-zoo name -> ("<model id>/<file name>" (detectron2/model_zoo/model_zoo.py),
# COCO val2017 box AP[, mask AP] from its MODEL_ZOO.md).
DETECTRON2_DETECTORS = {
    "COCO-Detection/faster_rcnn_R_50_FPN_1x": ("137257794/model_final_b275ba.pkl", 37.9),
    "COCO-Detection/faster_rcnn_R_50_FPN_3x": ("137849458/model_final_280758.pkl", 40.2),
    "COCO-Detection/faster_rcnn_R_101_FPN_3x": ("137851257/model_final_f6e8b1.pkl", 42.0),
    # -> model=mask_rcnn_fpn
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x": ("137260431/model_final_a54504.pkl", 38.6, 35.2),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x": ("137849600/model_final_f10217.pkl", 41.0, 37.2),
    # -> model=cascade_mask_rcnn_fpn
    "Misc/cascade_mask_rcnn_R_50_FPN_1x": ("138602847/model_final_e9d89b.pkl", 42.1, 36.4),
    "Misc/cascade_mask_rcnn_R_50_FPN_3x": ("144998488/model_final_480dd8.pkl", 44.3, 38.5),
    # -> model=mask_rcnn_fpn_v2's layout (4conv1fc box head) with GN or BatchNorm everywhere
    "Misc/mask_rcnn_R_50_FPN_3x_gn": ("138602888/model_final_dc5d9e.pkl", 42.6, 38.6),
    "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn": ("138602908/model_final_01ca85.pkl", 39.9, 36.6),
    "Misc/mask_rcnn_R_50_FPN_3x_syncbn": ("169527823/model_final_3b3c51.pkl", 41.9, 37.8),
}
# The MSRA ResNets Detectron2's own configs start from (BGR input, stride in the 1x1 conv), with
# the 1-crop ImageNet top-1 of KaimingHe/deep-residual-networks (100 - 24.7 and 100 - 23.6 % error).
DETECTRON2_BACKBONES = {"ImageNetPretrained/MSRA/R-50": 75.3, "ImageNetPretrained/MSRA/R-101": 76.4}


class PublishedWeightsError(CheckpointError):
    """A published-weights name that is unknown, cannot be fetched, or whose file fails its hash."""


@dataclass(frozen=True)
class PublishedWeights:
    name: str                  # canonical, e.g. "torchvision://resnet50.IMAGENET1K_V1"
    url: str
    kind: str                  # "detector" or "backbone"
    source: str                # convert_weights' --source
    hash_algorithm: str | None  # "sha256", "md5", or None when the publisher gives no hash
    hash_prefix: str | None
    metric: str                # the publisher's figure, for docs/model_zoo.md

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def is_published_name(value) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value).startswith(SCHEMES)


def _torchvision_entry(name: str, arch: str, version: str, kind: str) -> PublishedWeights:
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch)[version]
    metrics = weights.meta.get("_metrics", {})
    if "COCO-val2017" in metrics:
        coco = metrics["COCO-val2017"]
        metric = f"COCO val2017 box AP {coco['box_map']}" + (f", mask AP {coco['mask_map']}" if "mask_map" in coco else "")
    else:
        metric = f"ImageNet-1K top-1 {metrics['ImageNet-1K']['acc@1']}"
    # torch.hub's convention: the file name ends in "-<sha256 prefix>.<extension>".
    match = re.search(r"-([a-f0-9]+)\.", weights.url.rsplit("/", 1)[-1])
    return PublishedWeights(name, weights.url, kind, "torchvision", "sha256" if match else None,
                            match.group(1) if match else None, metric)


def _torchvision_lookup(rest: str) -> PublishedWeights | None:
    arch, _, version = rest.partition(".")
    if arch in TORCHVISION_DETECTORS:
        version, kind = version or TORCHVISION_DETECTORS[arch], "detector"
    elif arch in TORCHVISION_BACKBONES:
        version, kind = version or TORCHVISION_BACKBONE_DEFAULT, "backbone"
    else:
        return None
    from torchvision.models import get_model_weights

    versions = [w.name for w in get_model_weights(arch)]
    if version not in versions:
        raise PublishedWeightsError(f"torchvision publishes no version '{version}' of {arch}; "
                                    f"choose one of: {', '.join(f'torchvision://{arch}.{v}' for v in versions)}.")
    return _torchvision_entry(f"torchvision://{arch}.{version}", arch, version, kind)


def _detectron2_lookup(rest: str) -> PublishedWeights | None:
    rest = rest[: -len(".pkl")] if rest.endswith(".pkl") else rest
    if rest in DETECTRON2_DETECTORS:
        suffix, box_ap, *mask_ap = DETECTRON2_DETECTORS[rest]
        # Detectron2's MODEL_ZOO.md: "any model on this page contains its md5 prefix in its file name".
        match = re.search(r"_([a-f0-9]+)\.pkl$", suffix)
        return PublishedWeights(f"detectron2://{rest}", f"{DETECTRON2_PREFIX}{rest}/{suffix}", "detector",
                                "detectron2", "md5", match.group(1),
                                f"COCO val2017 box AP {box_ap}" + (f", mask AP {mask_ap[0]}" if mask_ap else ""))
    if rest in DETECTRON2_BACKBONES:
        return PublishedWeights(f"detectron2://{rest}", f"{DETECTRON2_PREFIX}{rest}.pkl", "backbone", "detectron2",
                                None, None, f"ImageNet-1K top-1 {DETECTRON2_BACKBONES[rest]} (MSRA, 1-crop)")
    return None


def published_names() -> list[str]:
    """Every name this registry knows, short forms first (for messages and docs)."""
    names = [f"torchvision://{arch}" for arch in (*TORCHVISION_DETECTORS, *TORCHVISION_BACKBONES)]
    names += [f"detectron2://{name}" for name in (*DETECTRON2_DETECTORS, *DETECTRON2_BACKBONES)]
    return names


def lookup(name: str | os.PathLike) -> PublishedWeights:
    """The registry entry of a published-weights name; PublishedWeightsError naming the known ones otherwise."""
    name = str(name)
    entry = None
    if name.startswith("torchvision://"):
        entry = _torchvision_lookup(name[len("torchvision://"):])
    elif name.startswith("detectron2://"):
        entry = _detectron2_lookup(name[len("detectron2://"):])
    if entry is None:
        raise PublishedWeightsError(f"Unknown published weights '{name}'. Known names: {', '.join(published_names())} "
                                    "(torchvision ResNets also take a version, e.g. torchvision://resnet50.IMAGENET1K_V2).")
    return entry


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


def converted_file(entry: PublishedWeights, raw: Path, sha256: str) -> Path:
    stem = raw.name.rsplit(".", 1)[0]
    return raw.with_name(f"{stem}.detector-v{CONVERSION_VERSION}-{sha256[:12]}.pth")


def _convert(entry: PublishedWeights, raw: Path, output: Path) -> Path:
    from detector.weights.convert import convert_weights

    logger.info("Converting %s (%s) to %s", entry.name, raw, output)
    # The conversion is written atomically: several processes may race here, and each
    # one's rename leaves a complete file.
    return convert_weights(entry.source, raw, output)


_KIND_ADVICE = {
    "detector": "it holds a whole detector: pass it as model.weights={name} (or --weights)",
    "backbone": "it holds ImageNet backbone weights: pass it as backbone.weights={name}",
}


def resolve_weights(value: str | os.PathLike, expect: str | None = None) -> Path:
    """A local file for `value`: a path is returned as given; a published name is fetched,
    checked and converted (see the module docstring), and the converted file returned.
    `expect` ("detector" or "backbone") refuses a name of the other kind with the fix."""
    if not is_published_name(value):
        return Path(value)
    entry = lookup(value)
    if expect is not None and entry.kind != expect:
        raise PublishedWeightsError(f"'{value}' cannot be used here: " + _KIND_ADVICE[entry.kind].format(name=value) + ".")
    raw, digests = fetch(entry)
    output = converted_file(entry, raw, digests["sha256"])
    if not output.is_file():
        _convert(entry, raw, output)
    return output
