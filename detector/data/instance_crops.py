"""Object crops of a detection dataset, written as an ImageFolder for classification.

Reads any dataset the config can describe (COCO JSON, VOC, generated shapes) through the
same index the detector trains on (coco_index / voc), so crowd regions, VOC "difficult"
objects and broken boxes are treated exactly as in detection: crowd and difficult boxes
are not cropped, zero-area boxes were already dropped. Each split of the dataset becomes
the split of the same name: OUT/train/<class>/*.jpg and OUT/test/<class>/*.jpg.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from detector.data.image_io import BadImageError, read_image_rgb
from detector.utils.progress import track

logger = logging.getLogger("detector")

SPLITS = ("train", "test")
JPEG_QUALITY = 95


@dataclass
class CropReport:
    """What was written, per split and class, and what was left out and why."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    too_small: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def total(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())

    def as_dict(self) -> dict:
        return {"counts": self.counts, "too_small": self.too_small, "unreadable_images": self.unreadable}


def safe_folder_name(name: str) -> str:
    """A class name as a folder name: path separators and odd characters become '_'."""
    cleaned = re.sub(r"[^\w.\- ]+", "_", str(name)).strip(" .")
    return cleaned or "_"


def crop_window(box: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel window (x1, y1, x2, y2) around an xyxy box grown by `margin` times its
    width/height on each side, clipped to the image; never empty."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    left = max(0, int(math.floor(x1 - dx)))
    top = max(0, int(math.floor(y1 - dy)))
    right = min(width, int(math.ceil(x2 + dx)))
    bottom = min(height, int(math.ceil(y2 + dy)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def _prepare_output(output: Path, overwrite: bool) -> None:
    existing = [output / split for split in SPLITS if (output / split).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} already exists; crops from an earlier run would mix with the new ones. "
            "Pick another --output or pass --overwrite to replace the train/ and test/ folders."
        )
    for folder in existing:
        shutil.rmtree(folder)
    output.mkdir(parents=True, exist_ok=True)


def crop_instances(cfg, output: str | os.PathLike, min_size: float = 8.0, margin: float = 0.0,
                   overwrite: bool = False, splits: tuple[str, ...] = SPLITS) -> CropReport:
    """Crop every non-crowd box of at least `min_size` pixels (width and height) of the
    configured dataset's splits into OUT/<split>/<class>/<image>_<k>.jpg; writes
    OUT/crops.json with the counts. Returns the report."""
    from detector.data.formats import build_format

    if min_size < 0 or margin < 0:
        raise ValueError(f"min_size={min_size} and margin={margin} must both be >= 0.")
    output = Path(output)
    _prepare_output(output, overwrite)
    report = CropReport()
    fmt = build_format(cfg)
    for split in splits:
        index = fmt.index(split)
        folders = [safe_folder_name(name) for name in index.class_names]
        if len(set(folders)) != len(folders):
            raise ValueError(f"class names {index.class_names} give clashing folder names {folders}; rename the classes.")
        counts = {name: 0 for name in index.class_names}
        too_small = 0
        for folder in folders:
            (output / split / folder).mkdir(parents=True, exist_ok=True)
        for record in track(index.records, desc=f"cropping {split}", unit="images"):
            sizes = record.boxes[:, 2:] - record.boxes[:, :2] if len(record.boxes) else np.zeros((0, 2))
            keep = [i for i in range(len(record.boxes)) if sizes[i, 0] >= min_size and sizes[i, 1] >= min_size]
            too_small += len(record.boxes) - len(keep)
            if not keep:
                continue
            try:
                image = read_image_rgb(record.path, (record.width, record.height), fmt.max_image_pixels)
            except BadImageError as error:
                logger.warning("Skipping %s: %s", error.path, error.reason)
                report.unreadable.append(f"{error.path}: {error.reason}")
                continue
            height, width = image.shape[:2]
            stem = Path(record.path).stem
            for i in keep:
                left, top, right, bottom = crop_window(record.boxes[i], margin, width, height)
                label = int(record.labels[i])
                name = index.class_names[label - 1]
                target = output / split / folders[label - 1] / f"{stem}_{record.image_id}_{i:03d}.jpg"
                Image.fromarray(image[top:bottom, left:right]).save(target, quality=JPEG_QUALITY)
                counts[name] += 1
        report.counts[split] = counts
        report.too_small[split] = too_small
        logger.info("%s: %d crops %s; %d boxes smaller than %g px left out.", split, sum(counts.values()),
                    counts, too_small, min_size)
    summary = {"dataset": fmt.name, "min_size": min_size, "margin": margin, **report.as_dict()}
    (output / "crops.json").write_text(json.dumps(summary, indent=2))
    return report
