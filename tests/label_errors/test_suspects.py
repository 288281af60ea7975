"""The kinds and scores of suspects on planted predictions (no model): each kind named on the box
it is about, a clean image left alone, crowd and difficult boxes not judged, surer errors first."""
from __future__ import annotations

import pytest

pytest.importorskip("cleanlab")

from detector.label_errors.suspects import ENTRY_FIELDS, find_suspects  # noqa: E402

DEFAULTS = dict(confident_score=0.5, good_iou=0.6, near_iou=0.1, spurious_score=0.1, missing_merge_iou=0.5,
                separate_iou=0.4)


def ann(ann_id, image_id, bbox, category, **extra):
    return {"id": ann_id, "image_id": image_id, "bbox": list(bbox), "category_id": category, "iscrowd": 0,
            "area": bbox[2] * bbox[3], **extra}


def det(image_id, bbox, category, score):
    return {"image_id": image_id, "bbox": list(bbox), "category_id": category, "score": score}


def dataset():
    """Image 1 clean; image 2 one error of each kind; image 3 a crowd region and a difficult box;
    image 4 an unlabelled object touching a labelled one (TIDE: a localisation error)."""
    images = [{"id": i, "file_name": f"/data/{i}.jpg", "name": f"img{i}.jpg", "width": 400, "height": 300}
              for i in (1, 2, 3, 4)]
    annotations = [
        ann(11, 1, (10, 10, 40, 40), 1), ann(12, 1, (100, 100, 50, 30), 2), ann(13, 1, (200, 50, 40, 40), 1),
        ann(21, 2, (10, 10, 40, 40), 1),      # a cat that the model calls a dog: wrong_class
        ann(22, 2, (100, 100, 40, 40), 2),    # a dog drawn 20 px off: loose
        ann(23, 2, (300, 200, 30, 30), 1),    # a box on nothing: spurious
        ann(31, 3, (10, 10, 80, 80), 2, iscrowd=1),
        ann(32, 3, (200, 100, 40, 40), 1, difficult=1),
        ann(33, 3, (300, 20, 40, 40), 2),
        ann(41, 4, (100, 100, 40, 40), 1),    # labelled, and found; its unlabelled neighbour is missing
    ]
    results = [
        det(1, (11, 10, 40, 41), 1, 0.97), det(1, (100, 101, 50, 30), 2, 0.95), det(1, (201, 50, 39, 40), 1, 0.9),
        det(1, (300, 200, 30, 30), 2, 0.03),                      # low-score noise: no missing box
        det(2, (10, 11, 40, 40), 2, 0.93), det(2, (10, 10, 40, 40), 1, 0.2),
        det(2, (120, 120, 40, 40), 2, 0.9),
        det(2, (200, 150, 60, 50), 2, 0.96),                      # nothing given there: missing
        det(2, (202, 151, 58, 50), 1, 0.7),                       # the same object, another class: merged
        det(3, (20, 20, 30, 30), 1, 0.95),                        # on the crowd region: not missing
        det(3, (300, 20, 40, 40), 2, 0.9),
        det(4, (101, 100, 40, 40), 1, 0.9), det(4, (130, 100, 40, 40), 1, 0.92),   # IoU 0.14 with box 41
    ]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def test_each_kind_is_named_on_its_box_and_a_clean_image_is_not_flagged():
    coco, results = dataset()
    findings = find_suspects(coco, results, DEFAULTS)
    got = {(s.image, s.kind, s.annotation_id) for s in findings.suspects}
    assert got == {("img2.jpg", "wrong_class", 21), ("img2.jpg", "loose", 22), ("img2.jpg", "spurious", 23),
                   ("img2.jpg", "missing", None), ("img4.jpg", "missing", None)}
    by_kind = {s.kind: s for s in findings.suspects if s.image == "img2.jpg"}
    assert by_kind["wrong_class"].predicted_class == "dog" and by_kind["wrong_class"].given_class == "cat"
    assert by_kind["loose"].predicted_box == [120.0, 120.0, 40.0, 40.0] and by_kind["loose"].given_box == [100, 100, 40, 40]
    assert by_kind["missing"].predicted_class == "dog" and by_kind["missing"].given_box is None
    assert by_kind["missing"].predicted_score == 0.96
    assert by_kind["spurious"].predicted_box is None and by_kind["spurious"].given_class == "cat"
    assert all(0.0 < s.score <= 1.0 for s in findings.suspects)
    assert list(findings.suspects[0].entry()) == list(ENTRY_FIELDS)
    assert sorted(findings.ranked_images()) == [2, 4]
    # cleanlab's own image scores agree: the damaged image is the worst.
    assert findings.image_quality[2] < findings.image_quality[1]


def test_scores_rank_surer_errors_first():
    coco, results = dataset()
    results = [r for r in results if r["image_id"] != 2] + [
        det(2, (10, 11, 40, 40), 2, 0.99),   # a sure wrong class on box 21
        det(2, (100, 100, 40, 41), 1, 0.6),  # an unsure one on box 22
        det(2, (300, 200, 30, 30), 1, 0.95),  # box 23 found
    ]
    findings = find_suspects(coco, results, DEFAULTS)
    on_image_2 = [s for s in findings.suspects if s.image == "img2.jpg"]
    assert [(s.kind, s.annotation_id) for s in on_image_2] == [("wrong_class", 21), ("wrong_class", 22)]
    assert on_image_2[0].score > on_image_2[1].score


def test_a_same_class_match_keeps_a_box_from_wrong_class_and_thresholds_are_honoured():
    coco, results = dataset()
    # Box 21's own class predicted surer than the other class: not a swap.
    results = [r for r in results if not (r["image_id"] == 2 and r["bbox"] == [10, 10, 40, 40])]
    results.append(det(2, (10, 10, 40, 40), 1, 0.98))
    kinds = {(s.kind, s.annotation_id) for s in find_suspects(coco, results, DEFAULTS).suspects}
    assert ("wrong_class", 21) not in kinds
    # A stricter confident_score leaves out the 0.9 loose prediction (and the 0.93 swap stays out too).
    strict = dict(DEFAULTS, confident_score=0.95)
    kinds = {(s.kind, s.annotation_id) for s in find_suspects(coco, results, strict).suspects}
    assert ("loose", 22) not in kinds and ("missing", None) in kinds
