"""Running a trained detector on image files (behind tools/predict.py)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.utils.draw import draw_boxes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
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


def predict_images(
    weights: str | Path,
    inputs: list[Path],
    output_dir: str | Path,
    score_thresh: float = 0.5,
    device: str = "cpu",
    tta: bool = False,
) -> list[dict[str, Any]]:
    """Write output_dir/predictions.json and one picture per image; returns the predictions.

    tta: test-time augmentation with the settings of conf/config.yaml's test.aug_* keys
    (scales, flip, merge) and the checkpoint's own NMS threshold and detections per image."""
    from detector.data.image_io import BadImageError, read_image_rgb
    from detector.modeling.build import load_model

    model = load_model(str(weights), overrides=[f"model.roi_heads.score_thresh={score_thresh}"], device=device)
    if tta:
        from detector.config import load_config
        from detector.evaluation.tta import build_tta

        settings = load_config(["test.aug=true"])
        settings.model.roi_heads = model.config.model.roi_heads  # the checkpoint's post-processing
        model = build_tta(settings, model).eval()
        names_source = model.model
    else:
        names_source = model
    names = list(names_source.config.model.class_names or [])
    from detector.weights.safetensors_io import read_checkpoint_with_config

    checkpoint = read_checkpoint_with_config(weights)  # category ids from a .pth or a .safetensors header
    category_ids = checkpoint.get("category_ids") or list(range(1, len(names) + 1))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions: list[dict[str, Any]] = []
    for path in inputs:
        try:
            image = read_image_rgb(str(path))
        except BadImageError as error:
            logger.warning("Skipping %s", error)
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255).to(device)
        with torch.no_grad():
            out = model([tensor])[0]
        boxes = out["boxes"].cpu().numpy()
        scores = out["scores"].cpu().numpy()
        labels = out["labels"].cpu().numpy()
        keep = scores >= score_thresh
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        texts = [names[int(l) - 1] if 0 < int(l) <= len(names) else str(int(l)) for l in labels]
        for box, score, label, text in zip(boxes, scores, labels, texts):
            x1, y1, x2, y2 = (float(v) for v in box)
            predictions.append({
                "file_name": str(path.name),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
                "category_id": int(category_ids[int(label) - 1]) if 0 < int(label) <= len(category_ids) else int(label),
                "category_name": text,
            })
        drawn = draw_boxes(image, boxes, texts, scores)
        # RGB -> BGR for OpenCV; PNG keeps the drawing crisp.
        import cv2

        cv2.imwrite(str(output_dir / f"{path.stem}.png"), drawn[:, :, ::-1])
        logger.info("%s: %d detections", path.name, len(boxes))
    with open(output_dir / "predictions.json", "w") as handle:
        json.dump(predictions, handle, indent=1)
    return predictions
