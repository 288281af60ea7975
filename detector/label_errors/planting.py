"""Planted label errors, and how many of them the search finds (tools/bench_label_errors.py).

plant_errors copies a COCO dict and, seeded, removes a share of its judged boxes, gives another
share another class and shifts a third share by half their size (half the width across and half
the height down or up, towards the image's inside: IoU 1/7 with the true box). The three shares
are disjoint. The planted list (kind it should be found as, image, annotation id, true box) stays
with the caller.

measure() matches the planted errors to the suspects of label_errors.json. The rule: a removed
box is found by a `missing` suspect in its image whose predicted box overlaps the true box at
IoU >= 0.5; a swapped or shifted box by a `wrong_class` or `loose` suspect naming its annotation
id. "any kind" counts a suspect of any kind on the same box (same annotation id, or for a removed
box any predicted box at IoU >= 0.5). It reports per kind: the share of images with a planted error
of that kind among the top 50 / top 100 images ranked by their best suspect of that kind
(precision), the share of planted errors found among the top 200 suspects of their kind (recall),
and the share of all images with such an error (what a random pick would reach).
"""
from __future__ import annotations

import copy
import random

from detector.evaluation.analysis.box_iou import coco_box_iou
from detector.label_errors.kinds import judged

PLANTED_KINDS = ("missing", "wrong_class", "loose")   # removed, class swapped, shifted


def _shifted(bbox, width: float, height: float, rng: random.Random) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    dx = w / 2 if x + w + w / 2 <= width else -w / 2
    dy = h / 2 if y + h + h / 2 <= height else -h / 2
    if rng.random() < 0.5 and x - w / 2 >= 0:
        dx = -w / 2
    if rng.random() < 0.5 and y - h / 2 >= 0:
        dy = -h / 2
    x, y = min(max(x + dx, 0.0), width - w), min(max(y + dy, 0.0), height - h)
    return [x, y, w, h]


def plant_errors(coco: dict, seed: int, share: float = 0.05) -> tuple[dict, list[dict]]:
    """(the damaged copy, the planted errors); `share` of the judged boxes for each kind."""
    rng = random.Random(int(seed))
    planted_coco = copy.deepcopy(coco)
    images = {int(i["id"]): i for i in planted_coco["images"]}
    category_ids = [int(c["id"]) for c in planted_coco["categories"]]
    candidates = [i for i, a in enumerate(planted_coco["annotations"]) if judged(a)]
    rng.shuffle(candidates)
    count = int(round(share * len(candidates)))
    removed, swapped, shifted = (candidates[k * count:(k + 1) * count] for k in range(3))
    planted = []
    for kind, members in zip(PLANTED_KINDS, (removed, swapped, shifted)):
        for index in members:
            ann = planted_coco["annotations"][index]
            image = images[int(ann["image_id"])]
            record = {"kind": kind, "image": image.get("name", image["file_name"]), "image_id": int(ann["image_id"]),
                      "annotation_id": ann["id"], "true_box": list(ann["bbox"]), "true_class": int(ann["category_id"])}
            if kind == "wrong_class":
                ann["category_id"] = rng.choice([c for c in category_ids if c != int(ann["category_id"])])
                record["planted_class"] = ann["category_id"]
            elif kind == "loose":
                ann["bbox"] = _shifted(ann["bbox"], image["width"], image["height"], rng)
                record["planted_box"] = list(ann["bbox"])
            planted.append(record)
    gone = set(removed)
    planted_coco["annotations"] = [a for i, a in enumerate(planted_coco["annotations"]) if i not in gone]
    return planted_coco, planted


def _found_by(error: dict, entry: dict, same_kind: bool) -> bool:
    if same_kind and entry["kind"] != error["kind"]:
        return False
    if entry["image"] != error["image"]:
        return False
    if error["kind"] == "missing":
        return entry["predicted_box"] is not None and entry["annotation_id"] is None and \
            coco_box_iou([entry["predicted_box"]], [error["true_box"]])[0, 0] >= 0.5
    return entry["annotation_id"] == error["annotation_id"]


def _ranked_images(entries: list[dict]) -> list[str]:
    """The images in the order of their first entry (entries are ranked: an image's first is its best)."""
    return list(dict.fromkeys(entry["image"] for entry in entries))


def measure(entries: list[dict], planted: list[dict], num_images: int, tops=(50, 100), recall_top: int = 200) -> dict:
    """The figures of the module docstring, per planted kind and for all kinds together."""
    figures = {}
    for kind in (*PLANTED_KINDS, "all"):
        errors = [e for e in planted if kind in ("all", e["kind"])]
        own = [e for e in entries if kind == "all" or e["kind"] == kind]
        with_error = {e["image"] for e in errors}
        images = _ranked_images(own)
        row = {"planted": len(errors), "suspects": len(own), "images_with_planted": len(with_error),
               "base_rate": len(with_error) / max(1, num_images)}
        for top in tops:
            chosen = images[:top]
            row[f"precision_top{top}"] = (sum(1 for i in chosen if i in with_error) / len(chosen)) if chosen else None
            row[f"images_top{top}"] = len(chosen)
        head = own[:recall_top]
        row[f"recall_top{recall_top}"] = (sum(1 for e in errors if any(_found_by(e, s, kind != "all") for s in head))
                                          / max(1, len(errors)))
        row["found_any_kind"] = sum(1 for e in errors if any(_found_by(e, s, False) for s in entries)) / max(1, len(errors))
        figures[kind] = row
    return figures


def format_figures(figures: dict, tops=(50, 100), recall_top: int = 200) -> str:
    """A table of measure()'s figures, for the console and the docs."""
    head = (["kind", "planted", "suspects", "base rate"] + [f"precision top {t}" for t in tops]
            + [f"recall top {recall_top}", "found (any kind, any rank)"])
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for kind, row in figures.items():
        cells = [kind, str(row["planted"]), str(row["suspects"]), f"{row['base_rate']:.2f}"]
        cells += ["-" if row[f"precision_top{t}"] is None else f"{row[f'precision_top{t}']:.2f} ({row[f'images_top{t}']} img)"
                  for t in tops]
        cells += [f"{row[f'recall_top{recall_top}']:.2f}", f"{row['found_any_kind']:.2f}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)

