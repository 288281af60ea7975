"""The gallery: one picture per suspect image, the most suspect first (OUT/gallery/NNN_<image>.png).

Drawn with the project's box drawing (detector/utils/draw.py) in the colours of the evaluation
pictures (detector/evaluation/eval_pictures.py): the given boxes in green with their class, and
the suspected corrections in red with the kind written on each -- "missing: RBC 0.97" on the
predicted box, "wrong_class: WBC 0.91" and "loose: RBC 0.88" on the predicted box, "spurious"
on the given box itself (remove it). The caption under the image gives its rank and cleanlab's
label quality for the image (lower = worse).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from detector.evaluation.analysis.box_iou import coco_to_xyxy
from detector.evaluation.eval_pictures import GT_COLOUR, PRED_COLOUR
from detector.label_errors.kinds import judged
from detector.label_errors.suspects import Findings

GALLERY_DIR = "gallery"


def _file_name(rank: int, image_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(image_name).stem)[:80]
    return f"{rank:03d}_{stem}.png"


def draw_suspect_image(image: np.ndarray, given: list[dict], names: dict[int, str], suspects: list,
                       caption: str) -> np.ndarray:
    """`image` (RGB) with its given boxes (green) and its suspects (red, kind written), captioned."""
    import cv2

    from detector.utils.draw import draw_boxes

    out = draw_boxes(image, coco_to_xyxy([a["bbox"] for a in given]), [names[int(a["category_id"])] for a in given],
                     colour=GT_COLOUR)
    boxes, texts = [], []
    for s in suspects:
        box = s.predicted_box if s.predicted_box is not None else s.given_box
        what = s.predicted_class if s.kind in ("missing", "wrong_class", "loose") else ""
        texts.append(f"{s.kind}: {what} {s.score:.2f}".replace("  ", " "))
        boxes.append(box)
    if boxes:
        out = draw_boxes(out, coco_to_xyxy(boxes), texts, colour=PRED_COLOUR)
    band = np.full((22, out.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(band, caption, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([out, band])


def write_gallery(findings: Findings, coco: dict, out: Path, top: int, max_image_pixels: int) -> list[str]:
    """The pictures of the `top` most suspect images; their file names, in rank order (an image over
    dataset.max_image_pixels, or unreadable, is left out)."""
    from PIL import Image

    from detector.data.image_io import BadImageError, read_image_rgb

    folder = out / GALLERY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("[0-9][0-9][0-9]_*.png"):   # an earlier run's pictures (--rescore)
        old.unlink()
    images = {int(i["id"]): i for i in coco["images"]}
    names = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    given_by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if judged(ann):
            given_by_image.setdefault(int(ann["image_id"]), []).append(ann)
    suspects_by_image: dict[int, list] = {}
    for s in findings.suspects:
        suspects_by_image.setdefault(s.image_id, []).append(s)
    written = []
    for rank, image_id in enumerate(findings.ranked_images()[:top], start=1):
        entry = images[image_id]
        try:
            pixels = read_image_rgb(entry["file_name"], (entry["width"], entry["height"]), max_image_pixels)
        except (BadImageError, OSError):
            continue
        quality = findings.image_quality.get(image_id)
        caption = f"#{rank} {entry.get('name', entry['file_name'])}" + (
            "" if quality is None else f"  cleanlab label quality {quality:.3f}")
        picture = draw_suspect_image(pixels, given_by_image.get(image_id, []), names, suspects_by_image[image_id],
                                     caption)
        name = _file_name(rank, str(entry.get("name", entry["file_name"])))
        Image.fromarray(picture).save(folder / name)
        written.append(name)
    return written
