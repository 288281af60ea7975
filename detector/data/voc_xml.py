"""Pascal VOC XML files as COCO dictionaries, so one dataset class and one evaluator serve both
(the VOC formats: detector/data/voc.py, and folders without split files: folder_layouts.py).

Layout: ROOT/Annotations/<id>.xml, ROOT/JPEGImages/<id>.jpg, ROOT/ImageSets/Main/<split>.txt.
VOC pixel coordinates are 1-based and inclusive, so a box xmin..xmax covers
xmax - xmin + 1 pixels: it becomes COCO [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1].
A box whose max equals its min marks a point, not a region, and becomes zero-area (the
shared checks then report and drop it). `difficult` objects become iscrowd=1: left out
of training and ignored by COCOeval, which is what VOC's own evaluation does with them.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from functools import lru_cache

from detector.data.image_io import BadImageError, read_image_size


def split_ids(root: str, split: str) -> list[str]:
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        available = sorted(f[:-4] for f in os.listdir(os.path.dirname(path))) if os.path.isdir(os.path.dirname(path)) else []
        raise FileNotFoundError(
            f"Pascal VOC split file {path} not found (expected ROOT/ImageSets/Main/<split>.txt under "
            f"dataset.root={root}); available splits: {available or 'none'}"
        )
    with open(path) as handle:
        return [line.split()[0] for line in handle if line.strip()]


def discover_classes(root: str) -> list[str]:
    """Every object name in ROOT/Annotations/*.xml, sorted: the same list for every split."""
    folder = os.path.join(root, "Annotations")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Pascal VOC annotation folder {folder} not found (dataset.root={root})")
    return _discover_classes_cached(folder, os.stat(folder).st_mtime_ns)


@lru_cache(maxsize=4)
def _discover_classes_cached(folder: str, _mtime: int) -> list[str]:
    names = set()
    for file_name in os.listdir(folder):
        if file_name.endswith(".xml"):
            try:
                tree = ET.parse(os.path.join(folder, file_name))
            except (ET.ParseError, OSError):
                continue  # reported as a problem when the split is read
            for obj in tree.getroot().iter("object"):
                name = (obj.findtext("name") or "").strip()
                if name:
                    names.add(name)
    return sorted(names)


def voc_to_coco(root: str, split: str, classes: list[str] | None = None, use_difficult: bool = False):
    """(coco_dict, problems) for one split; file_name values are relative to ROOT/JPEGImages.

    problems: (file, reason) pairs for XML files that cannot be read at all; box-level
    defects are left in the dict for coco_index to judge, so VOC and COCO share one rule.
    Objects whose name is not in `classes` get category_id None (reported as unknown).
    """
    classes = list(classes) if classes is not None else discover_classes(root)
    cat_ids = {name: i for i, name in enumerate(classes, start=1)}
    images, annotations, problems = [], [], []
    for image_id, stem in enumerate(split_ids(root, split), start=1):
        xml_path = os.path.join(root, "Annotations", f"{stem}.xml")
        try:
            tree = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as error:
            problems.append((xml_path, f"cannot read the annotation XML ({error}); the image is left out"))
            continue
        file_name = (tree.findtext("filename") or "").strip() or f"{stem}.jpg"
        if not os.path.exists(os.path.join(root, "JPEGImages", file_name)) and os.path.exists(
            os.path.join(root, "JPEGImages", f"{stem}.jpg")
        ):
            file_name = f"{stem}.jpg"  # the XML's <filename> is often stale; the id is authoritative
        width, height = _size(tree, os.path.join(root, "JPEGImages", file_name))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        _add_objects(tree, image_id, xml_path, cat_ids, classes, use_difficult, annotations)
    return _coco_dict(images, annotations, cat_ids), problems


def _add_objects(tree, image_id: int, xml_path: str, cat_ids: dict, classes: list[str], use_difficult: bool,
                 annotations: list) -> None:
    """The <object> boxes of one XML as COCO annotations (appended to `annotations`)."""
    for obj in tree.iter("object"):
        name = (obj.findtext("name") or "").strip()
        difficult = _int(obj.findtext("difficult"), 0)
        annotations.append({
            "id": len(annotations) + 1,
            "image_id": image_id,
            "category_id": cat_ids.get(name, f"{name!r} (not in dataset.classes {classes})"),
            "bbox": _coco_box(obj.find("bndbox")),
            "iscrowd": int(bool(difficult) and not use_difficult),
            "difficult": difficult,
            # Lets reports name the XML and the box as written there.
            "source": f"{os.path.basename(xml_path)} object {name!r} (xmin, ymin, xmax, ymax) = "
                      f"({', '.join(str(obj.findtext('bndbox/' + k)) for k in ('xmin', 'ymin', 'xmax', 'ymax'))})",
        })


def _coco_dict(images: list, annotations: list, cat_ids: dict) -> dict:
    for ann in annotations:
        box = ann["bbox"]
        if all(isinstance(v, float) for v in box):
            ann["area"] = max(box[2], 0.0) * max(box[3], 0.0)
    categories = [{"id": i, "name": name, "supercategory": "none"} for name, i in cat_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def _coco_box(bndbox) -> list:
    if bndbox is None:
        return ["<no bndbox>"]
    raw = [bndbox.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]
    try:
        x1, y1, x2, y2 = (float(v) for v in raw)
    except (TypeError, ValueError):
        return [str(v) for v in raw]  # non-numeric: judged (and named) by coco_index
    width = x2 - x1 + 1 if x2 > x1 else x2 - x1
    height = y2 - y1 + 1 if y2 > y1 else y2 - y1
    return [x1 - 1, y1 - 1, width, height]


def _size(tree, image_path: str) -> tuple[int, int]:
    width = _int(tree.findtext("size/width"), 0)
    height = _int(tree.findtext("size/height"), 0)
    if width > 0 and height > 0:
        return width, height
    try:
        return read_image_size(image_path)  # some exporters write 0x0; the header knows
    except BadImageError:
        return 0, 0


def _int(text, default: int) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return default


def index_voc(root: str, split: str, classes: list[str] | None = None, use_difficult: bool = False):
    """DatasetIndex of a VOC split: voc_to_coco, then the checks every format shares."""
    from detector.data.coco_index import BAD_IMAGE, Problem, index_coco

    coco, xml_problems = voc_to_coco(root, split, classes, use_difficult)
    index = index_coco(coco, os.path.join(root, "JPEGImages"), root, classes)
    index.problems[:0] = [Problem(f, r, "unreadable_xml", BAD_IMAGE) for f, r in xml_problems]
    return index


def voc_split_to_coco_json(root: str, split: str, classes: list[str] | None = None, use_difficult: bool = False):
    """(clean COCO dict, problems), exactly the evaluation GT the VOC dataset uses.

    Zero-area boxes and unreadable XML files are left out and reported; difficult
    objects are kept as iscrowd=1 (ignored by COCOeval) unless use_difficult.
    """
    index = index_voc(root, split, classes, use_difficult)
    clean = dict(index.gt_dict)
    clean["annotations"] = [{k: v for k, v in a.items() if k != "source"} for a in clean["annotations"]]
    return clean, index.problems


# ---- VOC exports without split files (LabelImg, CVAT, Roboflow): XML files beside or apart from the images ----

def is_voc_xml(path: str) -> bool:
    """Whether `path` is a VOC annotation (its root element is <annotation>), reading only its start."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2048)
    except OSError:
        return False
    return b"<annotation" in head


def pair_xml_with_images(xml_files: list[str], image_dirs: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(xml, image) pairs and (xml, reason) for XML files whose image is not found.

    The image is the file of the same stem in `image_dirs` (exporters rename images and leave
    <filename> stale, and <path> names the labelling machine's disk), else the one <filename>
    or <path> names by its base name."""
    from detector.data.yolo import is_image

    by_stem, by_name = {}, {}
    for folder in image_dirs:
        for file_name in sorted(os.listdir(folder)):
            if is_image(file_name):
                full = os.path.join(folder, file_name)
                by_stem.setdefault(os.path.splitext(file_name)[0], full)
                by_name.setdefault(file_name, full)
    pairs, missing = [], []
    for xml_path in xml_files:
        stem = os.path.splitext(os.path.basename(xml_path))[0]
        image = by_stem.get(stem)
        if image is None:
            try:
                tree = ET.parse(xml_path).getroot()
                named = [os.path.basename((tree.findtext(k) or "").strip().replace("\\", "/")) for k in ("filename", "path")]
            except (ET.ParseError, OSError):
                named = []
            image = next((by_name[n] for n in named if n in by_name), None)
        if image is None:
            missing.append((xml_path, f"no image for it: looked for {stem}.* and its <filename>/<path> in "
                                      f"{', '.join(image_dirs)}; the annotation is left out"))
        else:
            pairs.append((xml_path, image))
    return pairs, missing


def voc_pairs_to_coco(pairs: list[tuple[str, str]], classes: list[str], use_difficult: bool = False):
    """(coco_dict with absolute file names, problems) for (xml, image) pairs."""
    cat_ids = {name: i for i, name in enumerate(classes, start=1)}
    images, annotations, problems = [], [], []
    for image_id, (xml_path, image_path) in enumerate(pairs, start=1):
        try:
            tree = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as error:
            problems.append((xml_path, f"cannot read the annotation XML ({error}); the image is left out"))
            continue
        width, height = _size(tree, image_path)
        images.append({"id": image_id, "file_name": image_path, "width": width, "height": height})
        _add_objects(tree, image_id, xml_path, cat_ids, classes, use_difficult, annotations)
    return _coco_dict(images, annotations, cat_ids), problems


def xml_object_names(xml_files: list[str]) -> list[str]:
    """Every object name in the XML files, sorted."""
    names = set()
    for path in xml_files:
        try:
            tree = ET.parse(path)
        except (ET.ParseError, OSError):
            continue   # reported when the split is read
        names.update((o.findtext("name") or "").strip() for o in tree.getroot().iter("object"))
    return sorted(n for n in names if n)


def standard_split_names(root: str) -> list[str]:
    """The split files of ROOT/ImageSets/Main (train, val, trainval, test, ...), not the
    per-class lists (aeroplane_train.txt)."""
    folder = os.path.join(root, "ImageSets", "Main")
    if not os.path.isdir(folder):
        return []
    return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".txt") and "_" not in f)


def index_pairs(pairs, missing, classes, use_difficult, source):
    from detector.data.coco_index import BAD_IMAGE, Problem, index_coco

    coco, xml_problems = voc_pairs_to_coco(pairs, classes, use_difficult)
    index = index_coco(coco, "", source, classes)
    index.problems[:0] = [Problem(f, r, "unreadable_xml", BAD_IMAGE) for f, r in xml_problems]
    index.problems[:0] = [Problem(f, r, "missing_image", BAD_IMAGE) for f, r in missing]
    return index
