"""A corrected copy of the labels, with exactly the corrections the user accepted.

`--accept FILE --write-fixed OUT.json` reads OUTPUT/label_errors.json (the ranked list) and
OUTPUT/annotations.json (every image, pooled by the search) and writes a COCO JSON with the
accepted entries applied -- nothing else changes, and nothing at all without the list:

    missing      the predicted box is added, with the predicted class
    wrong_class  the box's class becomes the predicted class
    loose        the box is replaced by the predicted box
    spurious     the box is removed

FILE, a text file, one accepted entry per line (`#` starts a comment):
    rank:3         the 3rd entry of label_errors.json (1 = the first)
    rank:1-20      the first twenty
    id:1234        every entry about annotation 1234 (missing boxes have none: accept them by rank)
or a JSON file {"ranks": [1, 2, 3], "annotation_ids": [1234]}.

The written file is COCO over the dataset's images, whatever the input layout (VOC, YOLO, COCO):
each image's file_name is its name as the dataset names it, relative to info.images_folder
(dataset.path or dataset.root), so `dataset=coco_format dataset.path=...` or the four COCO paths
read it; the annotations keep their ids, added boxes get new ones after the largest.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path


class AcceptListError(ValueError):
    """An accept list that cannot be applied; the message names the file, the line and the fix."""


def _id_value(text: str):
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def read_accept_list(path: str | Path, num_entries: int) -> tuple[set[int], set]:
    """(positions, 0-based, and annotation ids) accepted by the file (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--accept {path} does not exist")
    text = path.read_text()
    positions, ids = set(), set()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise AcceptListError(f"--accept {path}: not valid JSON ({error})") from None
        if not isinstance(data, dict) or not set(data) <= {"ranks", "annotation_ids"}:
            raise AcceptListError(f"--accept {path}: expected {{\"ranks\": [1, 2], \"annotation_ids\": [1234]}}")
        ranks = [int(r) for r in data.get("ranks", [])]
        ids = set(data.get("annotation_ids", []))
    else:
        ranks = []
        for number, line in enumerate(text.splitlines(), start=1):
            item = line.split("#", 1)[0].strip()
            if not item:
                continue
            match = re.fullmatch(r"rank\s*:\s*(\d+)(?:\s*-\s*(\d+))?|id\s*:\s*(\S+)", item)
            if match is None:
                raise AcceptListError(f"--accept {path}, line {number}: {item!r}; write rank:N, rank:N-M or id:ANNOTATION_ID")
            if match.group(3) is not None:
                ids.add(_id_value(match.group(3)))
            else:
                first = int(match.group(1))
                ranks.extend(range(first, int(match.group(2) or first) + 1))
    for rank in ranks:
        if not 1 <= rank <= num_entries:
            raise AcceptListError(f"--accept {path}: rank {rank} is not in label_errors.json (ranks 1..{num_entries})")
        positions.add(rank - 1)
    return positions, ids


def accepted_entries(entries: list[dict], positions: set[int], ids: set) -> list[dict]:
    """The entries the list accepts, in rank order; an id that names no entry is refused."""
    named = {e["annotation_id"] for e in entries if e["annotation_id"] is not None}
    unknown = sorted(str(i) for i in ids if i not in named)
    if unknown:
        raise AcceptListError(f"--accept: annotation id(s) {', '.join(unknown[:5])} are in no entry of label_errors.json")
    return [e for i, e in enumerate(entries) if i in positions or (e["annotation_id"] is not None
                                                                     and e["annotation_id"] in ids)]


def apply_corrections(pooled: dict, accepted: list[dict]) -> dict:
    """The COCO dict of the module docstring: `pooled` with `accepted` applied."""
    coco = copy.deepcopy(pooled)
    by_name = {str(i.get("name", i["file_name"])): i for i in coco["images"]}
    category = {str(c["name"]): int(c["id"]) for c in coco["categories"]}
    by_id = {a["id"]: a for a in coco["annotations"]}

    def category_id(entry: dict) -> int:
        name = entry["predicted_class"]
        if name not in category:
            raise AcceptListError(f"entry {entry['kind']} on {entry['image']!r}: class {name!r} is not in "
                                  f"annotations.json (classes: {', '.join(category)}); label_errors.json and "
                                  "annotations.json must come from the same run")
        return category[name]

    removed = set()
    next_id = max([a["id"] for a in coco["annotations"] if isinstance(a["id"], int)], default=0) + 1
    for entry in accepted:
        kind, ann_id = entry["kind"], entry["annotation_id"]
        if kind == "missing":
            image = by_name.get(entry["image"])
            if image is None:
                raise AcceptListError(f"entry for image {entry['image']!r}: the image is not in annotations.json")
            x, y, w, h = entry["predicted_box"]
            coco["annotations"].append({"id": next_id, "image_id": image["id"], "bbox": [x, y, w, h], "area": w * h,
                                        "iscrowd": 0, "category_id": category_id(entry)})
            next_id += 1
            continue
        if ann_id not in by_id or ann_id in removed:
            raise AcceptListError(f"entry {kind} for annotation {ann_id}: the annotation is "
                                  f"{'already removed by a spurious entry' if ann_id in removed else 'not in annotations.json'}")
        ann = by_id[ann_id]
        if kind == "wrong_class":
            ann["category_id"] = category_id(entry)
        elif kind == "loose":
            ann["bbox"] = list(entry["predicted_box"])
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
            ann.pop("segmentation", None)   # the old outline does not fit the new box
        elif kind == "spurious":
            removed.add(ann_id)
        else:
            raise AcceptListError(f"entry of unknown kind {kind!r} in label_errors.json")
    coco["annotations"] = [a for a in coco["annotations"] if a["id"] not in removed]
    for image in coco["images"]:
        image["file_name"] = image.pop("name", image["file_name"])
    coco["info"] = {k: v for k, v in coco.get("info", {}).items() if k != "loader_problems"}
    coco["info"]["description"] = (f"the dataset's labels with {len(accepted)} accepted correction(s) "
                                   "(detector-find-label-errors --write-fixed); file names relative to images_folder")
    return coco


def write_fixed(out_dir: str | Path, accept: str | Path, target: str | Path) -> tuple[Path, int]:
    """Read OUTPUT's list and pooled labels, apply the accepted entries, write `target`."""
    from detector.label_errors.pooled_dataset import POOLED_FILE, read_pooled
    from detector.label_errors.report import read_entries

    out_dir = Path(out_dir)
    entries = read_entries(out_dir)
    positions, ids = read_accept_list(accept, len(entries))
    accepted = accepted_entries(entries, positions, ids)
    pooled_path = out_dir / POOLED_FILE
    if not pooled_path.is_file():
        raise FileNotFoundError(f"{pooled_path} does not exist: run detector-find-label-errors with --output {out_dir} first")
    fixed = apply_corrections(read_pooled(pooled_path), accepted)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(fixed))
    return target, len(accepted)
