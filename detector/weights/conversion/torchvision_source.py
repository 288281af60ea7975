"""The torchvision weights source: `--source torchvision` and the `torchvision://...` names.

Its files are torchvision state dicts (`.pth`, read weights-only by the one reader): Faster and
Mask R-CNN detectors and ImageNet ResNets/ResNeXts, converted by torchvision_conversion.py. Its
published names are read from torchvision's own weight enums, so URLs, hashes and published
accuracies are those of the installed torchvision; torch.hub's file names end in
`-<sha256 prefix>.pth`, which is the hash each file is checked against.
"""
from __future__ import annotations

import re
from pathlib import Path

from detector.weights.conversion.record import ConvertedWeights
from detector.weights.conversion.registry import PublishedWeights, PublishedWeightsError, WeightsSource, register_source
from detector.weights.conversion.torchvision_conversion import converted_torchvision
from detector.weights.state_dicts import read_state_dict

# torchvision detectors by name -> the weights enum member (COCO_V1 is the only one published).
TORCHVISION_DETECTORS = {
    "fasterrcnn_resnet50_fpn": "COCO_V1",
    "fasterrcnn_resnet50_fpn_v2": "COCO_V1",
    "maskrcnn_resnet50_fpn": "COCO_V1",       # -> model=mask_rcnn_fpn
    "maskrcnn_resnet50_fpn_v2": "COCO_V1",    # -> model=mask_rcnn_fpn_v2
    "retinanet_resnet50_fpn": "COCO_V1",      # -> model=retinanet_fpn
    "retinanet_resnet50_fpn_v2": "COCO_V1",   # -> model=retinanet_fpn_v2
    "fcos_resnet50_fpn": "COCO_V1",           # -> model=fcos_fpn
    "keypointrcnn_resnet50_fpn": "COCO_V1",   # -> model=keypoint_rcnn_fpn (COCO person keypoints)
}
TORCHVISION_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                         "resnext50_32x4d", "resnext101_32x8d")
# V1, not torchvision's DEFAULT (V2 where it exists): torchvision's detection models,
# fasterrcnn_resnet50_fpn and _v2 included, were trained from the V1 ImageNet weights,
# so the detection recipes of conf/ match them. `torchvision://resnet50.IMAGENET1K_V2` picks V2.
TORCHVISION_BACKBONE_DEFAULT = "IMAGENET1K_V1"


def recognises(path: Path) -> bool:
    """A state dict the one reader reads (.pth, .pt, .safetensors, ...): anything but a pickle."""
    return path.suffix != ".pkl"


def convert(path: Path, coco80: bool = False) -> ConvertedWeights:
    state, _ = read_state_dict(path)
    return converted_torchvision(state, coco80, source=str(path))


def _entry(name: str, arch: str, version: str, kind: str) -> PublishedWeights:
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch)[version]
    metrics = weights.meta.get("_metrics", {})
    if "COCO-val2017" in metrics:
        coco = metrics["COCO-val2017"]
        metric = (f"COCO val2017 box AP {coco['box_map']}" + (f", mask AP {coco['mask_map']}" if "mask_map" in coco else "")
                  + (f", keypoint AP {coco['kp_map']}" if "kp_map" in coco else ""))
    else:
        metric = f"ImageNet-1K top-1 {metrics['ImageNet-1K']['acc@1']}"
    # torch.hub's convention: the file name ends in "-<sha256 prefix>.<extension>".
    match = re.search(r"-([a-f0-9]+)\.", weights.url.rsplit("/", 1)[-1])
    return PublishedWeights(name, weights.url, kind, "torchvision", "sha256" if match else None,
                            match.group(1) if match else None, metric)


def published(rest: str) -> PublishedWeights | None:
    """`torchvision://<arch>[.<version>]`: a detector of TORCHVISION_DETECTORS or an ImageNet backbone."""
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
    return _entry(f"torchvision://{arch}.{version}", arch, version, kind)


def published_names() -> list[str]:
    """Short forms (each takes a version too, e.g. torchvision://resnet50.IMAGENET1K_V2)."""
    return [f"torchvision://{arch}" for arch in (*TORCHVISION_DETECTORS, *TORCHVISION_BACKBONES)]


register_source(WeightsSource(
    name="torchvision", convert=convert, recognises=recognises, options=("coco80",),
    files="a torchvision state dict (.pth: Faster/Mask R-CNN, or an ImageNet ResNet/ResNeXt)",
    published=published, published_names=published_names))
