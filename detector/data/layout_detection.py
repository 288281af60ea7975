"""Which dataset layout a folder holds, found from its files (`dataset=auto dataset.path=DIR`).

Looked for, at the folder and one level down:
  * YOLO: a `data.yaml` (or another .yaml with `names` and `train`);
  * COCO: a JSON with images and categories (at the folder or in annotations/), or one per split
    folder (train/, valid/ or val/, test/), with its images beside it or in an images/ folder;
  * Pascal VOC: Annotations/ + JPEGImages/ (+ ImageSets/Main/ split files), or XML files and
    images in one folder or two, at the folder or per split folder.
A folder holding none of them, or more than one, is refused with a message saying what was
looked for and what was found.
"""
from __future__ import annotations

import os

from detector.data.coco_index import DatasetError
from detector.data.folder_layouts import CocoLayout, Layout, VocFlatLayout, VocStandardLayout, YoloLayout
from detector.data.yolo import is_image

# Split folders as exporters name them (Roboflow: train/ valid/ test/), lower-case.
SPLIT_FOLDERS = ("train", "valid", "val", "validation", "test")
LAYOUTS = ("auto", "coco", "voc", "yolo")
LOOKED_FOR = {
    "yolo": "YOLO: a data.yaml with `names` and `train` (plus images/ and labels/ folders)",
    "coco": "COCO: a .json with 'images' and 'categories' in the folder or its annotations/, or one per split "
            "folder (train/, valid/ or val/, test/) with the images beside it",
    "voc": "Pascal VOC: Annotations/ and JPEGImages/ (ImageSets/Main/ optional), or .xml files and images in one "
           "folder or two (also per split folder)",
}


def find_layout(path: str, layout: str = "auto") -> Layout:
    """The layout of the dataset folder `path`; `layout` (coco | voc | yolo) restricts the search
    to one. DatasetError naming the folder, what was looked for and what is there otherwise."""
    if layout not in LAYOUTS:
        raise DatasetError(f"dataset.layout={layout!r}: expected one of {LAYOUTS}")
    if not os.path.isdir(path):
        raise DatasetError(f"dataset.path={path} is not a folder: point it at your dataset's folder "
                           "(the one holding data.yaml, the COCO JSON or the VOC folders)")
    kinds = ("yolo", "coco", "voc") if layout == "auto" else (layout,)
    finders = {"yolo": _find_yolo, "coco": _find_coco, "voc": _find_voc}
    found = [(kind, finders[kind](path)) for kind in kinds]
    found = [(kind, result) for kind, result in found if result is not None]
    if len(found) > 1:
        raise DatasetError(
            f"dataset.path={path} holds more than one dataset layout: " + "; ".join(
                f"{kind} ({result.description})" for kind, result in found)
            + ". Keep one in the folder, or name the one to read: dataset=yolo, dataset=coco_format or dataset=voc "
              "(with dataset.path).")
    if not found:
        looked = "\n".join(f"  - {LOOKED_FOR[k]}" for k in kinds)
        raise DatasetError(f"dataset.path={path}: no dataset layout found. Looked for:\n{looked}\n"
                           f"Found: {_describe(path)}. See docs/your_data.md for each layout as a tree.")
    return found[0][1]


def _entries(folder: str) -> list[str]:
    try:
        return sorted(e for e in os.listdir(folder) if not e.startswith("."))
    except OSError:
        return []


def _subdirs(folder: str) -> list[str]:
    return [os.path.join(folder, e) for e in _entries(folder) if os.path.isdir(os.path.join(folder, e))]


def _split_folders(root: str) -> dict[str, str]:
    """Split name (lower case) -> folder, for the split folders `root` has."""
    return {os.path.basename(d).lower(): d for d in _subdirs(root) if os.path.basename(d).lower() in SPLIT_FOLDERS}


def _describe(path: str) -> str:
    entries = _entries(path)
    if not entries:
        return "an empty folder"
    shown = [e + ("/" if os.path.isdir(os.path.join(path, e)) else "") for e in entries[:12]]
    more = f" and {len(entries) - 12} more" if len(entries) > 12 else ""
    hint = ""
    labels = [d for d in [path, *_subdirs(path)] if any(f.endswith(".txt") for f in _entries(d))]
    if labels and not any(f.endswith((".yaml", ".yml")) for f in entries):
        hint = (" (if the .txt files are YOLO labels, add a data.yaml naming the classes and the image folders, "
                "e.g. names: [cat, dog], train: images/train, val: images/val)")
    return ", ".join(shown) + more + hint


# ---- YOLO -------------------------------------------------------------------------------------

def _find_yolo(root: str) -> Layout | None:
    import yaml

    yamls = [e for e in _entries(root) if e.lower().endswith((".yaml", ".yml"))]
    described = []
    for name in sorted(yamls, key=lambda n: (n.lower() not in ("data.yaml", "data.yml"), n)):
        try:
            with open(os.path.join(root, name)) as handle:
                data = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and "names" in data and "train" in data:
            described.append(name)
    if not described:
        return None
    # data.yaml wins; read errors name the file (a missing folder, bad names).
    return YoloLayout(root, os.path.join(root, described[0]))


# ---- COCO -------------------------------------------------------------------------------------

def _looks_coco(path: str) -> bool:
    """A JSON file whose start names COCO's top-level keys (without parsing a large file)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError:
        return False
    return b'"images"' in head or (b'"categories"' in head and b'"annotations"' in head)


def _coco_jsons(folder: str) -> list[str]:
    return [os.path.join(folder, e) for e in _entries(folder)
            if e.lower().endswith(".json") and _looks_coco(os.path.join(folder, e))]


def _image_folders(folder: str) -> list[str]:
    """`folder` and its subfolders (two levels) that hold images, `folder` first."""
    found = []
    for candidate in [folder, *_subdirs(folder)]:
        if any(is_image(e) for e in _entries(candidate)):
            found.append(candidate)
        for inner in _subdirs(candidate) if candidate != folder else []:
            if any(is_image(e) for e in _entries(inner)):
                found.append(inner)
    return found


def _split_of_file(name: str) -> str | None:
    lower = name.lower()
    for token, split in (("train", "train"), ("test", "test"), ("valid", "valid"), ("val", "val")):
        if token in lower:
            return split
    return None


def _find_coco(root: str) -> Layout | None:
    splits = _split_folders(root)
    per_split = {name: _coco_jsons(folder) for name, folder in splits.items()}
    per_split = {name: files for name, files in per_split.items() if files}
    if per_split:
        files = {}
        for name, jsons in per_split.items():
            if len(jsons) > 1:
                raise DatasetError(f"{splits[name]}: {len(jsons)} COCO JSON files ({', '.join(map(os.path.basename, jsons))}); "
                                   "keep one per split folder")
            folder = os.path.dirname(jsons[0])
            files[name] = (jsons[0], [folder, *_image_folders(folder)[1:]])
        return CocoLayout(root, _ordered(files), f"COCO JSON per split folder ({', '.join(n + '/' for n in files)})")
    jsons = _coco_jsons(root) + _coco_jsons(os.path.join(root, "annotations"))
    if not jsons:
        return None
    candidates = _image_folders(root) or [root]
    if len(jsons) == 1:
        files = {_split_of_file(os.path.basename(jsons[0])) or "all": (jsons[0], [os.path.dirname(jsons[0]), *candidates])}
        return CocoLayout(root, files, f"one COCO JSON ({os.path.relpath(jsons[0], root)})")
    instances = [j for j in jsons if os.path.basename(j).startswith("instances_")]
    jsons = instances or jsons    # COCO 2017 also ships captions_ and person_keypoints_ files
    files = {}
    for path in jsons:
        split = _split_of_file(os.path.basename(path))
        if split is None or split in files:
            raise DatasetError(f"{root}: {len(jsons)} COCO JSON files ({', '.join(os.path.relpath(j, root) for j in jsons)}) "
                               "and their names do not tell the splits apart; keep one per split, named with "
                               "train / val / test, or set the four paths with dataset=coco_format")
        # An images folder named like the split (train2017/) is tried first.
        named = [c for c in candidates if _split_of_file(os.path.basename(c)) == split]
        files[split] = (path, [*named, os.path.dirname(path), *candidates])
    return CocoLayout(root, _ordered(files), f"COCO JSON per split ({', '.join(os.path.relpath(j, root) for j in jsons)})")


def _ordered(files: dict) -> dict:
    order = {name: i for i, name in enumerate(SPLIT_FOLDERS)}
    return dict(sorted(files.items(), key=lambda item: order.get(item[0], len(order))))


# ---- Pascal VOC -------------------------------------------------------------------------------

def _xml_folders(folder: str) -> list[str]:
    from detector.data.voc_xml import is_voc_xml

    found = []
    for candidate in [folder, *_subdirs(folder)]:
        xmls = [e for e in _entries(candidate) if e.lower().endswith(".xml")]
        if xmls and is_voc_xml(os.path.join(candidate, xmls[0])):
            found.append(candidate)
    return found


def _flat_split(folder: str) -> tuple[list[str], list[str]] | None:
    xml_dirs = _xml_folders(folder)
    if not xml_dirs:
        return None
    image_dirs = [d for d in [folder, *_subdirs(folder)] if any(is_image(e) for e in _entries(d))]
    return xml_dirs, image_dirs or [folder]


def _find_voc(root: str) -> Layout | None:
    from detector.data.voc_xml import standard_split_names

    if os.path.isdir(os.path.join(root, "Annotations")) and os.path.isdir(os.path.join(root, "JPEGImages")) \
            and standard_split_names(root):
        return VocStandardLayout(root)
    splits = {name: _flat_split(folder) for name, folder in _split_folders(root).items()}
    splits = {name: found for name, found in splits.items() if found is not None}
    if splits:
        return VocFlatLayout(root, _ordered(splits), f"VOC XML files per split folder ({', '.join(n + '/' for n in splits)})")
    found = _flat_split(root)
    if found is None:
        return None
    xml_dirs, image_dirs = found
    where = ", ".join(os.path.relpath(d, root) + "/" for d in xml_dirs)
    return VocFlatLayout(root, {"all": found}, f"VOC XML files without split files (in {where})")
