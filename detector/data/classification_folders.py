"""The files of an image-classification dataset: ROOT/<split>/<class>/*.jpg (what
tools/crop_instances.py writes), read into (path, label) pairs.

Labels are 0..K-1 in the sorted order of the training split's class folders, and a test split
holding a class the training split lacks is an error: the model could never predict it. Kept
apart from decoding and augmentation so the class order -- which a checkpoint's labels depend
on -- is decided in one place, cheaply (no image is opened).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def class_folders(root: str | os.PathLike) -> list[str]:
    """Sorted names of the class folders under `root` (hidden folders ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder root {root} does not exist; expected {root}/<class>/*.jpg "
                                "(tools/crop_instances.py writes such folders).")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise FileNotFoundError(f"{root} holds no class folders; expected {root}/<class>/*.jpg.")
    return names


def scan_image_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """((path, label) pairs sorted by class then file name, class names). With
    `class_names` (e.g. the train split's), labels follow that list and a folder not in
    it is an error naming the folder."""
    root = Path(root)
    found = class_folders(root)
    if class_names is None:
        class_names = found
    else:
        class_names = list(class_names)
        extra = [name for name in found if name not in class_names]
        if extra:
            raise ValueError(f"{root} has class folder(s) {extra} that the training split lacks "
                             f"(training classes: {class_names}); the model cannot predict them.")
    samples = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue  # a class with no test images: reported as such by the evaluation
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                samples.append((str(path), label))
    if not samples:
        raise FileNotFoundError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders.")
    return samples, list(class_names)
