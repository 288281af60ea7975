"""The Detectron2 weights source: `--source detectron2` and the `detectron2://...` names.

Its files are Detectron2 model-zoo `.pkl` files, read by the restricted unpickler (numpy arrays
and plain containers only): R-CNN detectors (detectron2_conversion.py) and the MSRA ImageNet
ResNets its configs start from (caffe2_resnet.py), told apart by their keys. Published names
are its model-zoo config paths; the model zoo puts an md5 prefix in each file name, which is
the hash each file is checked against (the MSRA ResNets have none).
"""
from __future__ import annotations

import re
from pathlib import Path

from detector.weights.conversion.caffe2_resnet import caffe2_blobs, convert_caffe2_resnet
from detector.weights.conversion.detectron2_conversion import convert_detectron2
from detector.weights.conversion.detectron2_retinanet import convert_detectron2_retinanet, is_detectron2_retinanet
from detector.weights.conversion.record import ConvertedWeights
from detector.weights.conversion.registry import PublishedWeights, WeightsSource, register_source
from detector.weights.formats.restricted_pickle import load_restricted_pickle

DETECTRON2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"
# Detectron2 model-zoo name -> ("<model id>/<file name>" (detectron2/model_zoo/model_zoo.py),
# COCO val2017 box AP[, mask AP (None: no masks)[, keypoint AP]] from its MODEL_ZOO.md).
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
    # -> model=keypoint_rcnn_fpn (COCO person keypoints: box AP, keypoint AP)
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x": ("137261548/model_final_04e291.pkl", 53.6, None, 64.0),
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x": ("137849621/model_final_a6e10b.pkl", 55.4, None, 65.5),
    # -> model=retinanet_fpn (detectron2_retinanet.py)
    "COCO-Detection/retinanet_R_50_FPN_1x": ("190397773/model_final_bfca0b.pkl", 37.4),
    "COCO-Detection/retinanet_R_50_FPN_3x": ("190397829/model_final_5bd44e.pkl", 38.7),
}
# The MSRA ResNets Detectron2's own configs start from (BGR input, stride in the 1x1 conv), with
# the 1-crop ImageNet top-1 of KaimingHe/deep-residual-networks (100 - 24.7 and 100 - 23.6 % error).
DETECTRON2_BACKBONES = {"ImageNetPretrained/MSRA/R-50": 75.3, "ImageNetPretrained/MSRA/R-101": 76.4}

MSRA_USAGE = ("Backbone {name}: use it with backbone.weights={{output}} backbone.stride_in_1x1=true "
              "model.input.format=BGR and Detectron2's pixel mean/std (see docs/model_zoo.md)")


def recognises(path: Path) -> bool:
    return path.suffix == ".pkl"


def convert(path: Path) -> ConvertedWeights:
    """A model-zoo detector, or an MSRA ImageNet ResNet (e.g. ImageNetPretrained/MSRA/R-50.pkl)."""
    data = load_restricted_pickle(path)
    blobs = caffe2_blobs(data)
    if blobs is not None:
        body, backbone, model = convert_caffe2_resnet(blobs)
        return ConvertedWeights(state=body, kind="backbone", source=str(path), backbone=backbone, model=model,
                                usage=MSRA_USAGE.format(name=backbone["name"]))
    weights = data.get("model", data) if isinstance(data, dict) else None
    if isinstance(weights, dict) and is_detectron2_retinanet(weights):   # detectron2_retinanet.py
        state, backbone, model, num_classes, names = convert_detectron2_retinanet(data)
    else:
        state, backbone, model, num_classes, names = convert_detectron2(data)
    return ConvertedWeights(state=state, kind="detector", source=str(path), backbone=backbone, model=model,
                            num_classes=num_classes, class_names=names)


def published(rest: str) -> PublishedWeights | None:
    """`detectron2://<model-zoo config path>` (".pkl" optional), or an MSRA ResNet's path."""
    rest = rest[: -len(".pkl")] if rest.endswith(".pkl") else rest
    if rest in DETECTRON2_DETECTORS:
        suffix, box_ap, *other_ap = DETECTRON2_DETECTORS[rest]
        mask_ap, keypoint_ap = (other_ap + [None, None])[:2]
        # Detectron2's MODEL_ZOO.md: "any model on this page contains its md5 prefix in its file name".
        match = re.search(r"_([a-f0-9]+)\.pkl$", suffix)
        return PublishedWeights(f"detectron2://{rest}", f"{DETECTRON2_PREFIX}{rest}/{suffix}", "detector",
                                "detectron2", "md5", match.group(1),
                                f"COCO val2017 box AP {box_ap}" + (f", mask AP {mask_ap}" if mask_ap else "")
                                + (f", keypoint AP {keypoint_ap}" if keypoint_ap else ""))
    if rest in DETECTRON2_BACKBONES:
        return PublishedWeights(f"detectron2://{rest}", f"{DETECTRON2_PREFIX}{rest}.pkl", "backbone", "detectron2",
                                None, None, f"ImageNet-1K top-1 {DETECTRON2_BACKBONES[rest]} (MSRA, 1-crop)")
    return None


def published_names() -> list[str]:
    return [f"detectron2://{name}" for name in (*DETECTRON2_DETECTORS, *DETECTRON2_BACKBONES)]


register_source(WeightsSource(
    name="detectron2", convert=convert, recognises=recognises,
    files="a Detectron2 .pkl file (a model-zoo R-CNN, or an MSRA ImageNet ResNet)",
    published=published, published_names=published_names))
