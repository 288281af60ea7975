"""The models and inputs a benchmark compares: torchvision's Faster R-CNN R50-FPN and this
project's model holding the same (converted) weights, on real COCO photographs."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

COCO128_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "coco128"


def spread_random_weights_(model: nn.Module, seed: int) -> None:
    """Draw every float tensor from `seed`, scaled by fan-in, with norm statistics spread
    around 1 -- random weights whose detections are neither empty nor all tied, so that
    comparing two implementations' detections means something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.dtype.is_floating_point:
                continue
            if name.endswith("running_var") or (name.endswith("weight") and tensor.dim() == 1):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            else:
                fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)


def torchvision_r50_fpn(min_size: int = 800, max_size: int = 1333, seed: int = 0) -> nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn as users fine-tune it from ImageNet weights:
    FrozenBatchNorm, stem and res2 frozen (trainable_backbone_layers=3), 91 COCO classes."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3)
    model = FasterRCNN(backbone, num_classes=91, min_size=min_size, max_size=max_size)
    spread_random_weights_(model, seed)
    return model


def ours_with_same_weights(reference: nn.Module, overrides: list[str] = ()) -> nn.Module:
    """This project's model converted from `reference` (tools/convert_weights.py's path)."""
    from detector.weights.loading import load_model
    from detector.weights.conversion.convert import convert_weights

    with tempfile.TemporaryDirectory() as folder:
        source, converted = Path(folder) / "torchvision.pth", Path(folder) / "converted.pth"
        torch.save(reference.state_dict(), source)
        convert_weights("torchvision", source, converted)
        return load_model(converted, overrides=list(overrides))


def set_test_size(model: nn.Module, min_size: int, max_size: int) -> None:
    """The eval resize of either model."""
    if hasattr(model, "preprocessor"):
        model.preprocessor.min_size_test, model.preprocessor.max_size_test = min_size, max_size
    else:
        model.transform.min_size, model.transform.max_size = (min_size,), max_size


def coco_photos(root: Path, count: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The first `count` annotated coco128 photos: (image [3,H,W] in [0,1], boxes xyxy, COCO category ids)."""
    from torchvision.io import ImageReadMode, read_image

    root = Path(root)
    annotations_file = root / "annotations" / "instances_train2017.json"
    if not annotations_file.is_file():
        raise FileNotFoundError(f"benchmark images: '{annotations_file}' not found; pass --coco128 DIR "
                                "(the coco128 folder of ../shared/datasets).")
    data = json.loads(annotations_file.read_text())
    by_image: dict[int, list] = {}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        if not ann.get("iscrowd", 0) and w > 1 and h > 1:
            by_image.setdefault(ann["image_id"], []).append(([x, y, x + w, y + h], ann["category_id"]))
    photos = []
    for info in sorted(data["images"], key=lambda i: i["id"]):
        objects = by_image.get(info["id"])
        if not objects:
            continue
        image = read_image(str(root / "train2017" / info["file_name"]), mode=ImageReadMode.RGB).float() / 255
        boxes = torch.tensor([o[0] for o in objects], dtype=torch.float32)
        labels = torch.tensor([o[1] for o in objects], dtype=torch.int64)
        photos.append((image, boxes, labels))
        if len(photos) == count:
            break
    return photos


def square_training_batch(photos, size: int, device: torch.device) -> tuple[list, list]:
    """Photos resized to size x size (boxes scaled alike): the images a training step takes."""
    images, targets = [], []
    for image, boxes, labels in photos:
        height, width = image.shape[-2:]
        resized = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        scale = torch.tensor([size / width, size / height, size / width, size / height])
        images.append(resized.to(device))
        targets.append({"boxes": (boxes * scale).to(device), "labels": labels.to(device)})
    return images, targets
