"""YOLO text labels (what Ultralytics and most labelling tools export), read as boxes per image.

A `data.yaml` names the classes (`names`: a list, or a dict {index: name}) and the splits
(`train`, `val`, `test`): each a folder of images, a `.txt` list of image paths, or a list of
these, relative to the yaml's `path:` key (itself relative to the yaml) or to the yaml's folder.
Exports often say `path: ../datasets/x` or `train: ../train/images`, paths that made sense on
the exporting machine: a `path` that does not exist falls back to the yaml's folder, and an
entry with a leading `../` that does not resolve is tried without it (as Ultralytics does).

An image's labels are in the file of the same stem under the matching `labels/` folder
(`.../images/a.jpg` -> `.../labels/a.txt`), else beside the image. One object per line:
`class cx cy w h`, normalized to the image (after EXIF rotation), or a polygon
`class x1 y1 x2 y2 ...`, which gives the box around it (and its mask for mask models).
Pose labels (a data.yaml with `kpt_shape: [K, 2 or 3]`, Ultralytics' pose format) follow the
box with K points `px py [v]`, normalized too; they become COCO keypoints (v 0: not labelled, 1:
hidden, 2: visible; without v, a point at 0, 0 is not labelled and the others are visible), named
keypoint_0 .. keypoint_{K-1}; `flip_idx` (the keypoint each one becomes in a mirror) rides along
as the categories' "keypoint_flip_idx" (detector/data/keypoints.py reads it).
An image without a label file, or with an empty one, is a background image: it trains as
a negative (when dataset.filter_empty is false) and counts in evaluation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from detector.data.coco_index import DatasetError
from detector.data.formats import ImageBoxes
from detector.data.image_io import BadImageError, read_image_size

# The extensions Ultralytics reads (compared lower-case, so .JPG and .Jpeg count).
IMAGE_EXTENSIONS = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")
YOLO_SPLIT_KEYS = ("train", "val", "test")


def is_image(file_name: str) -> bool:
    return os.path.splitext(file_name)[1].lower() in IMAGE_EXTENSIONS


def images_under(folder: str) -> list[str]:
    """Every image file under `folder` (recursively), sorted, so the order never depends on the disk."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(parent, f) for f in sorted(files) if is_image(f) and not f.startswith(".")]
    return found


@dataclass
class YoloSpec:
    """What a data.yaml says, resolved: the class names in index order and each split's images."""

    yaml_path: str
    names: list[str]
    splits: dict[str, list[str]]   # yaml key (train | val | test) -> image paths, for the keys it has
    keypoint_shape: tuple[int, int] | None = None   # kpt_shape: (K, 2 or 3) for pose labels
    flip_idx: list[int] | None = None               # flip_idx: keypoint i becomes flip_idx[i] in a mirror

    @property
    def keypoint_names(self) -> list[str] | None:
        return None if self.keypoint_shape is None else [f"keypoint_{i}" for i in range(self.keypoint_shape[0])]


def read_data_yaml(yaml_path: str) -> YoloSpec:
    """The class names and the image files of each split a YOLO data.yaml names; DatasetError
    naming the file and key when something is missing."""
    import yaml

    try:
        with open(yaml_path) as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise DatasetError(f"{yaml_path}: cannot read it as YAML ({error})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{yaml_path}: expected a mapping with `names` and `train`, found {type(data).__name__}")
    names = parse_names(data.get("names"), yaml_path)
    base = os.path.dirname(os.path.abspath(yaml_path))
    if data.get("path"):
        declared = os.path.join(base, str(data["path"]))
        # `path: ../datasets/x` points at the exporter's own folder tree; the yaml's folder is the data here.
        base = os.path.normpath(declared) if os.path.isdir(declared) else base
    splits = {}
    for key in YOLO_SPLIT_KEYS:
        entry = data.get(key)
        if entry in (None, "", []):
            continue
        entries = entry if isinstance(entry, list) else [entry]
        splits[key] = sorted({image for item in entries for image in _entry_images(str(item), base, yaml_path, key)})
    if "train" not in splits:
        raise DatasetError(f"{yaml_path}: no `train` entry (a folder of images, a .txt list of images, or a list of "
                           "them, relative to the file or to its `path:`), e.g. train: images/train")
    keypoint_shape, flip_idx = _pose_keys(data, yaml_path)
    return YoloSpec(yaml_path, names, splits, keypoint_shape, flip_idx)


def _pose_keys(data: dict, yaml_path: str) -> tuple[tuple[int, int] | None, list[int] | None]:
    """(K, dims) of `kpt_shape` and the `flip_idx` list, checked; (None, None) without kpt_shape."""
    shape = data.get("kpt_shape")
    if shape is None:
        return None, None
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) for v in shape)
            and shape[0] > 0 and shape[1] in (2, 3)):
        raise DatasetError(f"{yaml_path}: kpt_shape must be [number of keypoints, 2 or 3], e.g. kpt_shape: [17, 3]; "
                           f"found {shape!r}")
    flip_idx = data.get("flip_idx")
    if flip_idx is not None and sorted(int(v) for v in flip_idx) != list(range(shape[0])):
        raise DatasetError(f"{yaml_path}: flip_idx must list each keypoint index 0..{shape[0] - 1} once (the keypoint "
                           f"each one becomes in a mirror image); found {flip_idx!r}")
    return (int(shape[0]), int(shape[1])), None if flip_idx is None else [int(v) for v in flip_idx]


def parse_names(names, yaml_path: str) -> list[str]:
    """`names` as a list, or a dict {0: cat, 1: dog} (its indices must be 0..K-1)."""
    if isinstance(names, dict):
        try:
            indexed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{yaml_path}: `names` keys must be class indices 0..K-1, found {list(names)}") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise DatasetError(f"{yaml_path}: `names` indices must be 0..{len(indexed) - 1} without gaps, "
                               f"found {sorted(indexed)}")
        return [indexed[i] for i in range(len(indexed))]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise DatasetError(f"{yaml_path}: `names` must list the classes, e.g. names: [cat, dog] or names: {{0: cat, 1: dog}}"
                       f"; found {names!r}")


def _entry_images(entry: str, base: str, yaml_path: str, key: str) -> list[str]:
    path = os.path.normpath(os.path.join(base, entry))
    if not os.path.exists(path) and entry.startswith("../"):
        path = os.path.normpath(os.path.join(base, entry[3:]))   # Roboflow's `train: ../train/images`
    if os.path.isdir(path):
        return images_under(path)
    if os.path.isfile(path) and path.endswith(".txt"):
        return _listed_images(path)
    if os.path.isfile(path) and is_image(path):
        return [path]
    raise DatasetError(f"{yaml_path}: `{key}: {entry}` -> {path} is neither a folder of images nor a .txt list of "
                       f"images (paths are relative to the yaml's folder or its `path:`, here {base})")


def _listed_images(list_file: str) -> list[str]:
    """Images a .txt list names, one per line, relative to the list's folder (as Ultralytics reads them)."""
    parent = os.path.dirname(list_file)
    with open(list_file) as handle:
        lines = [line.strip() for line in handle if line.strip()]
    return [os.path.normpath(line if os.path.isabs(line) else os.path.join(parent, line)) for line in lines]


def label_file(image_path: str) -> str | None:
    """The label file of an image: under the `labels` folder matching its last `images` folder,
    else beside it; None when there is none (a background image)."""
    stem = os.path.splitext(image_path)[0]
    marker = f"{os.sep}images{os.sep}"
    candidates = []
    if marker in stem:
        head, tail = stem.rsplit(marker, 1)
        candidates.append(f"{head}{os.sep}labels{os.sep}{tail}.txt")
    candidates.append(stem + ".txt")
    return next((c for c in candidates if os.path.isfile(c)), None)


def read_labels(path: str, width: int, height: int, names: list[str],
                keypoint_shape: tuple[int, int] | None = None) -> tuple[ImageBoxes, list[str]]:
    """The boxes (pixels, xyxy) of one label file for an image of `width` x `height`, and the
    lines that cannot be read (as reasons naming the line). Polygons also give segmentations;
    with `keypoint_shape` (K, dims) every line is a pose label: the box, then K points."""
    boxes, classes, polygons, keypoints, errors = [], [], [], [], []
    with open(path) as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue   # trailing blank lines are common
        where = f"{path} line {number}"
        try:
            values = [float(t) for t in tokens[1:]]
            index = int(float(tokens[0]))
        except ValueError:
            errors.append(f"{where}: {line.strip()!r} is not numbers (expected 'class cx cy w h' or a polygon)")
            continue
        if keypoint_shape is not None:
            count, dims = keypoint_shape
            if len(values) != 4 + count * dims:
                errors.append(f"{where}: {len(tokens)} values; a pose label (data.yaml kpt_shape {list(keypoint_shape)}) "
                              f"is 'class cx cy w h' plus {count} x {dims} keypoint values ({5 + count * dims} in all)")
                continue
            cx, cy, w, h = values[:4]
            points = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            polygon = None
            keypoints.append(_coco_keypoints(values[4:], dims, width, height))
        elif len(values) == 4:
            cx, cy, w, h = values
            points = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            polygon = None
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            points = [min(xs), min(ys), max(xs), max(ys)]
            polygon = [v * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
        else:
            errors.append(f"{where}: {len(tokens)} values; expected 5 ('class cx cy w h') or a polygon "
                          "('class x1 y1 x2 y2 x3 y3 ...')")
            continue
        name = names[index] if 0 <= index < len(names) else f"class index {index} (data.yaml names 0..{len(names) - 1})"
        boxes.append([points[0] * width, points[1] * height, points[2] * width, points[3] * height])
        classes.append(name)
        polygons.append(polygon)
    segmentations = [[p] if p is not None else None for p in polygons] if any(p is not None for p in polygons) else []
    return ImageBoxes(path="", boxes=boxes, classes=classes, width=width, height=height,
                      segmentations=segmentations, keypoints=keypoints), errors


def _coco_keypoints(values: list[float], dims: int, width: int, height: int) -> list[float]:
    """Normalized YOLO points (x y [v] each) -> COCO [x, y, v] * K in pixels."""
    triplets = []
    for i in range(0, len(values), dims):
        x, y = values[i] * width, values[i + 1] * height
        visibility = int(values[i + 2]) if dims == 3 else (0 if x == 0 and y == 0 else 2)
        triplets += [x, y, visibility] if visibility > 0 else [0.0, 0.0, 0]
    return triplets


def yolo_image_boxes(images: list[str], names: list[str],
                     keypoint_shape: tuple[int, int] | None = None) -> tuple[list[ImageBoxes], list[tuple[str, str]]]:
    """ImageBoxes for each image (boxes in pixels), and (file, reason) problems: unreadable
    images are kept with no size (the shared checks report them), unreadable lines are named."""
    result, problems = [], []
    for image in images:
        labels = label_file(image)
        try:
            width, height = read_image_size(image)
        except BadImageError:
            result.append(ImageBoxes(path=image))   # reported (and skipped) by the shared checks
            continue
        if labels is None:
            result.append(ImageBoxes(path=image, width=width, height=height))
            continue
        boxes, errors = read_labels(labels, width, height, names, keypoint_shape)
        boxes.path = image
        result.append(boxes)
        problems += [(image, reason) for reason in errors]
    return result, problems
