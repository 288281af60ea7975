"""Tiny dataset folders in each layout users bring (COCO, Pascal VOC, YOLO), written from one
set of annotations, and the same annotations as a plain COCO JSON to compare them against."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

CLASSES = ["cat", "dog", "bird"]


@dataclass
class Img:
    name: str                     # file name, extension included (.jpg, .JPG, .png, .bmp, .webp, .jpeg)
    size: tuple[int, int]         # width, height
    boxes: list = field(default_factory=list)   # (class name, x1, y1, x2, y2) in integer pixels


def sample_images(n: int = 12) -> list[Img]:
    """`n` images of varied sizes and extensions; every class in several images, and one
    background image (no boxes)."""
    extensions = [".jpg", ".JPG", ".png", ".jpeg", ".bmp", ".webp"]
    images = []
    for i in range(n):
        w, h = 64 + 8 * (i % 3), 48 + 8 * (i % 2)
        boxes = [] if i == n - 1 else [(CLASSES[i % 3], 2 + i, 3, 30 + i, 40)]
        if i % 4 == 1 and boxes:
            boxes.append((CLASSES[(i + 1) % 3], 35, 5 + i, 60, 44))
        images.append(Img(f"img_{i:02d}{extensions[i % len(extensions)]}", (w, h), boxes))
    return images


def write_image(path: Path, img: Img) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", img.size, (40 + 10 * len(img.name) % 200, 90, 120)).save(path)


def coco_dict(images: list[Img], file_names=None, categories=None) -> dict:
    categories = categories or [{"id": i + 1, "name": c, "supercategory": "none"} for i, c in enumerate(CLASSES)]
    ids = {c["name"]: c["id"] for c in categories}
    coco = {"images": [], "annotations": [], "categories": categories}
    for k, img in enumerate(images, start=1):
        coco["images"].append({"id": k, "file_name": (file_names or {}).get(img.name, img.name),
                               "width": img.size[0], "height": img.size[1]})
        for cls, x1, y1, x2, y2 in img.boxes:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": k, "category_id": ids[cls],
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                        "iscrowd": 0})
    return coco


def write_coco(folder: Path, images: list[Img], json_name: str = "annotations.json", **kwargs) -> None:
    for img in images:
        write_image(folder / img.name, img)
    (folder / json_name).write_text(json.dumps(coco_dict(images, **kwargs)))


def voc_xml(img: Img, filename: str, path: str) -> str:
    objects = "".join(
        f"<object><name>{cls}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"    # VOC: 1-based, inclusive
        for cls, x1, y1, x2, y2 in img.boxes)
    return (f"<annotation><folder>images</folder><filename>{filename}</filename><path>{path}</path>"
            f"<size><width>{img.size[0]}</width><height>{img.size[1]}</height><depth>3</depth></size>"
            f"{objects}</annotation>")


def write_voc_flat(xml_folder: Path, image_folder: Path, images: list[Img]) -> None:
    """XML files as LabelImg / CVAT leave them: <filename> not the file's name, <path> another machine's."""
    xml_folder.mkdir(parents=True, exist_ok=True)
    for img in images:
        write_image(image_folder / img.name, img)
        stem = os.path.splitext(img.name)[0]
        (xml_folder / f"{stem}.xml").write_text(voc_xml(img, f"IMG_{stem}_renamed.jpg",
                                                        f"C:\\Users\\someone\\labels\\{stem}.jpg"))


def yolo_lines(img: Img, classes: list[str], polygon: bool = False) -> str:
    w, h = img.size
    lines = []
    for cls, x1, y1, x2, y2 in img.boxes:
        k = classes.index(cls)
        if polygon:   # a diamond touching the box's four sides: its bounds are the box
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            points = [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
            lines.append(f"{k} " + " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in points))
        else:
            lines.append(f"{k} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "\n".join(lines) + "\n\n"   # exporters leave trailing blank lines


def write_yolo_split(image_dir: Path, label_dir: Path, images: list[Img], classes: list[str] = CLASSES,
                     polygons: tuple[str, ...] = ()) -> None:
    """Images and their label files; an image without boxes gets no label file (a background image)."""
    label_dir.mkdir(parents=True, exist_ok=True)
    for img in images:
        write_image(image_dir / img.name, img)
        if img.boxes:
            stem = os.path.splitext(img.name)[0]
            (label_dir / f"{stem}.txt").write_text(yolo_lines(img, classes, polygon=img.name in polygons))
