"""The ranked list of likely label errors: kinds (kinds.py) scored by cleanlab (scoring.py).

Each entry has exactly the fields of label_errors.json (ENTRY_FIELDS, docs/label_errors.md):
the image's name as the dataset names it, the given annotation's id (null for a missing box),
the kind, the score (higher = more likely an error), the given and predicted boxes in COCO
x, y, w, h (null where there is none), both classes and the prediction's score. The list runs
from the highest score down (equal scores: the image with cleanlab's lower label quality first);
images rank by their highest-scoring entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from detector.label_errors.kinds import find_candidates
from detector.label_errors.scoring import box_qualities, class_recall, score_candidates

ENTRY_FIELDS = ("image", "annotation_id", "kind", "score", "given_box", "predicted_box", "given_class",
                "predicted_class", "predicted_score")
THRESHOLD_KEYS = ("confident_score", "good_iou", "near_iou", "spurious_score", "missing_merge_iou", "separate_iou")


@dataclass
class Suspect:
    image: str
    annotation_id: Any
    kind: str
    score: float
    given_box: list | None
    predicted_box: list | None
    given_class: str | None
    predicted_class: str | None
    predicted_score: float | None
    image_id: int = field(default=0, repr=False)   # the pooled file's image id (not written)

    def entry(self) -> dict:
        return {name: getattr(self, name) for name in ENTRY_FIELDS}


@dataclass
class Findings:
    suspects: list[Suspect]
    image_quality: dict[int, float]     # cleanlab's label quality per image id (lower = worse)
    class_recall: dict[str, float]      # per class: the share of its boxes a confident prediction matched

    def ranked_images(self) -> list[int]:
        """Image ids with a suspect, the most suspect first: in the order of their best entry."""
        return list(dict.fromkeys(s.image_id for s in self.suspects))


def _box(values) -> list[float]:
    return [round(float(v), 2) for v in values]


def find_suspects(coco: dict, results: list[dict], thresholds: Mapping[str, float]) -> Findings:
    """The suspects of the pooled `coco` dict against honest `results` (COCO results format)."""
    settings = {key: float(thresholds[key]) for key in THRESHOLD_KEYS}
    candidates, matched = find_candidates(coco, results, **settings)
    qualities = box_qualities(coco, results, settings["confident_score"])
    recall = class_recall(coco, matched)
    scores = score_candidates(coco, results, candidates, qualities, recall)
    names = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    images = {int(i["id"]): i for i in coco["images"]}
    suspects = []
    for candidate, score in zip(candidates, scores):
        ann = coco["annotations"][candidate.annotation] if candidate.annotation >= 0 else None
        det = results[candidate.prediction] if candidate.prediction >= 0 else None
        image = images[candidate.image_id]
        suspects.append(Suspect(
            image=str(image.get("name", image["file_name"])),
            annotation_id=None if ann is None else ann["id"],
            kind=candidate.kind,
            score=round(score, 4),
            given_box=None if ann is None else _box(ann["bbox"]),
            predicted_box=None if det is None else _box(det["bbox"]),
            given_class=None if ann is None else names[int(ann["category_id"])],
            predicted_class=None if det is None else names[int(det["category_id"])],
            predicted_score=None if det is None else round(float(det["score"]), 4),
            image_id=candidate.image_id,
        ))
    # Equal scores: the image cleanlab finds worse first, then by name (a stable, readable order).
    suspects.sort(key=lambda s: (-s.score, qualities["image"].get(s.image_id, 1.0), s.image, str(s.annotation_id)))
    return Findings(suspects, qualities["image"], {names[c]: r for c, r in recall.items()})
