"""Running a trained detector on image files (behind tools/predict.py)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.evaluation.inference import sample_masks
from detector.evaluation.results_format import detections_to_coco_results
from detector.utils.draw import draw_boxes, draw_keypoints
from detector.utils.progress import Progress

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# The folder's detections in COCO results format, as training writes for its test set.
COCO_RESULTS_NAME = "coco_instances_results.json"
# The image id of each file in that results file, and the categories: a COCO JSON without annotations.
COCO_IMAGES_NAME = "coco_images.json"
logger = logging.getLogger("detector")


def list_images(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"--input {path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder.")
        return files
    raise FileNotFoundError(f"--input {path} does not exist.")


def resolve_device(name: str) -> torch.device:
    """--device: auto (the first CUDA device when there is one, else the CPU), cpu, cuda or cuda:N."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible; use --device cpu or auto.")
    return device


def image_ids_for(paths: list[Path]) -> list[int]:
    """COCO image ids for the results file: the file name's number when every name is one
    (COCO's own 000000000139.jpg, so the results evaluate against COCO's ground truth),
    else the position in the sorted listing, from 1."""
    stems = [p.stem for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def padded_input_size(preprocessor, height: int, width: int) -> tuple[int, int]:
    """The padded canvas an image of height x width fills inside the model in eval mode: the
    preprocessor's resize rule (short side to min_size_test, long side at most max_size_test,
    floored as F.interpolate does), then padding up to size_divisibility."""
    scale = min(preprocessor.min_size_test / min(height, width), preprocessor.max_size_test / max(height, width))
    sizes = (math.floor(height * scale), math.floor(width * scale))
    divisor = preprocessor.size_divisibility
    return tuple(math.ceil(v / divisor) * divisor for v in sizes) if divisor > 1 else sizes


def plan_batches(sizes: list[tuple[int, int] | None], batch_size: int, preprocessor=None) -> list[list[int]]:
    """Indices of the images, in batches of at most batch_size whose images share one padded
    canvas (same input size when there is no preprocessor to ask, e.g. under TTA, whose views
    rescale). A batch padded to a larger canvas changes every feature near an image's border
    (deeper convolutions see the padding's activations instead of zeros) and adds anchors, so
    detections would depend on the batch; with one canvas per batch they equal batch 1's.
    Images of unknown size (unreadable header) go alone."""
    groups: dict[Any, list[int]] = {}
    for index, size in enumerate(sizes):
        if size is None:
            key: Any = ("alone", index)
        elif preprocessor is not None:
            key = padded_input_size(preprocessor, *size)
        else:
            key = size
        groups.setdefault(key, []).append(index)
    return [members[i:i + batch_size] for members in groups.values() for i in range(0, len(members), batch_size)]


def header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) as the model will see it, from the file header; None when unreadable."""
    from detector.data.image_io import BadImageError, read_image_size

    try:
        width, height = read_image_size(str(path))
    except BadImageError:
        return None
    return height, width


def describe(out: dict[str, torch.Tensor], file_name: str, image_id: int, score_thresh: float, names: list[str],
             category_of: dict[int, int]) -> tuple[dict[str, torch.Tensor], list[str], list[dict], list[dict]]:
    """One image's detections kept at score_thresh: (kept outputs, label texts, predictions.json
    entries, COCO results entries). category_of maps the model's labels 1..K to the dataset's
    category ids (COCO's run 1..90 with gaps). A mask model's outputs also keep their "masks"
    ([N, 1, H, W] probabilities), and each entry gains its "segmentation": the mask at 0.5 as a
    COCO RLE with str counts. A keypoint model's keep their "keypoints" and "keypoints_scores",
    and each entry gains COCO's "keypoints" [x, y, v] * K and "keypoint_scores"."""
    keep = out["scores"] >= score_thresh
    kept = {key: value[keep].cpu() for key, value in out.items()
            if key in ("boxes", "scores", "labels", "masks", "keypoints", "keypoints_scores")}
    labels = [int(label) for label in kept["labels"]]
    texts = [names[label - 1] if 0 < label <= len(names) else str(label) for label in labels]
    predictions = []
    for box, score, label, text in zip(kept["boxes"].float().tolist(), kept["scores"].float().tolist(), labels, texts):
        x1, y1, x2, y2 = box
        predictions.append({"file_name": file_name, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score),
                            "category_id": category_of[label], "category_name": text})
    results = detections_to_coco_results([kept], [image_id], category_of)
    if "masks" in kept:
        # The same RLE in both files (results are one per detection, in the same order).
        for prediction, result in zip(predictions, results):
            prediction["segmentation"] = result["segmentation"]
    if "keypoints" in kept:
        for prediction, result in zip(predictions, results):
            prediction["keypoints"] = result["keypoints"]
            prediction["keypoint_scores"] = result["keypoint_scores"]
    return kept, texts, predictions, results


def write_json(data: Any, path: Path, indent: int | None = 1) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=indent)


def predict_images(
    weights: str | Path,
    inputs: list[Path],
    output_dir: str | Path,
    score_thresh: float = 0.5,
    device: str = "cpu",
    tta: bool = False,
    batch_size: int = 1,
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """Write output_dir/predictions.json, one picture per image and the folder's detections in
    COCO results format (coco_instances_results.json, with coco_images.json naming each image
    id's file); returns the predictions. A mask model's entries carry a "segmentation" (COCO
    RLE) in both files, and its pictures show the masks filled under the boxes.

    weights: a checkpoint file or a published name such as torchvision://fasterrcnn_resnet50_fpn_v2
    (see detector/weights/zoo.py); converted COCO detectors carry COCO's class names and ids.

    device: auto, cpu, cuda or cuda:N. batch_size: images per forward pass, each batch made of
    images the model resizes and pads to one canvas (see plan_batches), so the detections equal
    those of batch 1; the outputs keep the order of `inputs`.
    tta: test-time augmentation with the test.aug_* settings (scales, flip, merge) of the
    config the checkpoint stores, and the model's own NMS threshold and detections per image.
    An exported file (ONNX, OpenVINO, TorchScript; detector/deploy/) runs in its runtime at
    `precision` (fp32, or bf16 for OpenVINO), its class names and category ids from the file."""
    from detector.deploy.file_kind import is_exported_file
    from detector.weights.loading import model_from_checkpoint, read_model_checkpoint

    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be at least 1.")
    skeleton = None   # a keypoint model's, drawn with its keypoints (1-based pairs)
    if is_exported_file(str(weights)):
        from detector.deploy.run_settings import exported_for_prediction

        model = exported_for_prediction(str(weights), score_thresh, str(device), tta, precision)
        device = torch.device("cpu")   # images go to the runtime from the CPU
        names, category_ids = list(model.metadata.class_names), list(model.metadata.category_ids)
        num_classes = len(names)
        tta = False
    else:
        if precision != "fp32":
            raise ValueError(f"--precision {precision} applies to exported OpenVINO files; a checkpoint runs in "
                             "float32 here.")
        # The one read of the file (a published name, e.g. torchvision://fasterrcnn_resnet50_fpn_v2, is
        # first fetched and converted): the weights, the config the model is built from, the category ids.
        checkpoint = read_model_checkpoint(weights)
        device = resolve_device(str(device))
        model = model_from_checkpoint(checkpoint, str(weights),
                                      overrides=[f"model.roi_heads.score_thresh={score_thresh}"], device=str(device))
        built = model.config.model  # the checkpoint's stored config, as the model was built from it
        names = list(built.class_names) if built.class_names is not None else []
        num_classes = int(built.num_classes)
        category_ids = checkpoint.category_ids or list(range(1, len(names) + 1))
        # (one-stage models, retinanet_fpn and fcos_fpn, may have no roi_heads node at all)
        if "roi_heads" in built and "keypoint_head" in built.roi_heads and built.roi_heads.keypoint_head is not None:
            skeleton = built.roi_heads.keypoint_head.skeleton
        del checkpoint   # the model holds the weights now
    if tta:
        from detector.evaluation.tta import checkpoint_tta

        # The checkpoint's own test.aug_* settings; the merge takes the model's own post-processing.
        model = checkpoint_tta(model, str(weights)).eval()
    category_of = {label: int(category_ids[label - 1]) if label <= len(category_ids) else label
                   for label in range(1, num_classes + 1)}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    image_ids = image_ids_for(inputs)
    sizes = [header_size(path) for path in inputs] if batch_size > 1 else [None] * len(inputs)
    batches = plan_batches(sizes, batch_size, None if tta else getattr(model, "preprocessor", None))
    # Per input index: (predictions, COCO results, COCO image entry); written in the input order.
    per_image: dict[int, tuple[list, list, dict]] = {}
    from detector.data.image_io import BadImageError, read_image_rgb
    import cv2

    with Progress(total=len(inputs), desc="predict", unit="images") as progress:
        for indices in batches:
            batch = []
            for index in indices:
                try:
                    batch.append((index, read_image_rgb(str(inputs[index]))))
                except BadImageError as error:
                    logger.warning("Skipping %s", error)
                    progress.update(1)
            if not batch:
                continue
            tensors = [torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255).to(device)
                       for _, image in batch]
            with torch.no_grad():
                outputs = model(tensors)
            for (index, image), out in zip(batch, outputs):
                path, image_id = inputs[index], image_ids[index]
                kept, texts, mine, results = describe(out, path.name, image_id, score_thresh, names, category_of)
                entry = {"id": image_id, "file_name": path.name, "height": int(image.shape[0]),
                         "width": int(image.shape[1])}
                per_image[index] = (mine, results, entry)
                masks = sample_masks(kept["masks"]) if "masks" in kept else None  # filled under the boxes
                drawn = draw_boxes(image, kept["boxes"].float().numpy(), texts, kept["scores"].float().numpy(),
                                   masks=masks)
                if "keypoints" in kept:   # a keypoint model: dots and its skeleton over the boxes
                    drawn = draw_keypoints(drawn, kept["keypoints"].float().numpy(), texts, skeleton,
                                           kept["keypoints_scores"].float().numpy())
                # RGB -> BGR for OpenCV; PNG keeps the drawing crisp.
                cv2.imwrite(str(output_dir / f"{path.stem}.png"), drawn[:, :, ::-1])
                logger.debug("%s: %d detections", path.name, len(texts))
                progress.update(1)
    order = sorted(per_image)
    predictions = [p for i in order for p in per_image[i][0]]
    coco_results = [r for i in order for r in per_image[i][1]]
    coco_images = [per_image[i][2] for i in order]
    write_json(predictions, output_dir / "predictions.json")
    write_json(coco_results, output_dir / COCO_RESULTS_NAME, indent=None)
    categories = [{"id": int(cid), "name": name} for cid, name in zip(category_ids, names) if name != "N/A"]
    write_json({"images": coco_images, "categories": categories}, output_dir / COCO_IMAGES_NAME)
    return predictions
