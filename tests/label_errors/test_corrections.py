"""--accept / --write-fixed: exactly the accepted corrections, nothing without the list."""
from __future__ import annotations

import json

import pytest

from detector.cli.find_label_errors import main
from detector.label_errors.corrections import AcceptListError, apply_corrections, read_accept_list

POOLED = {
    "info": {"images_folder": "/data", "loader_problems": []},
    "images": [{"id": 1, "file_name": "/data/a/1.jpg", "name": "a/1.jpg", "split": "train", "width": 100, "height": 80},
               {"id": 2, "file_name": "/data/a/2.jpg", "name": "a/2.jpg", "split": "test", "width": 100, "height": 80}],
    "annotations": [
        {"id": 5, "image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100},
        {"id": 6, "image_id": 1, "bbox": [30, 30, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100},
        {"id": 7, "image_id": 2, "bbox": [50, 20, 20, 20], "category_id": 2, "iscrowd": 0, "area": 400},
        {"id": 8, "image_id": 2, "bbox": [5, 5, 8, 8], "category_id": 2, "iscrowd": 0, "area": 64},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
}

ENTRIES = [   # label_errors.json, ranked
    {"image": "a/2.jpg", "annotation_id": None, "kind": "missing", "score": 0.9, "given_box": None,
     "predicted_box": [60, 50, 12, 14], "given_class": None, "predicted_class": "cat", "predicted_score": 0.9},
    {"image": "a/1.jpg", "annotation_id": 5, "kind": "wrong_class", "score": 0.8, "given_box": [1, 1, 10, 10],
     "predicted_box": [1, 2, 10, 10], "given_class": "cat", "predicted_class": "dog", "predicted_score": 0.85},
    {"image": "a/2.jpg", "annotation_id": 7, "kind": "loose", "score": 0.7, "given_box": [50, 20, 20, 20],
     "predicted_box": [55, 25, 22, 21], "given_class": "dog", "predicted_class": "dog", "predicted_score": 0.8},
    {"image": "a/1.jpg", "annotation_id": 6, "kind": "spurious", "score": 0.6, "given_box": [30, 30, 10, 10],
     "predicted_box": None, "given_class": "cat", "predicted_class": None, "predicted_score": None},
    {"image": "a/2.jpg", "annotation_id": 8, "kind": "spurious", "score": 0.5, "given_box": [5, 5, 8, 8],
     "predicted_box": None, "given_class": "dog", "predicted_class": None, "predicted_score": None},
]


def by_id(coco):
    return {a["id"]: a for a in coco["annotations"]}


def test_each_kind_applies_its_correction_and_only_the_accepted_ones():
    fixed = apply_corrections(POOLED, ENTRIES[:4])   # all but the last spurious entry
    anns = by_id(fixed)
    assert sorted(anns) == [5, 7, 8, 9]                        # 6 removed, 9 added
    assert anns[9] == {"id": 9, "image_id": 2, "bbox": [60, 50, 12, 14], "area": 168, "iscrowd": 0, "category_id": 1}
    assert anns[5]["category_id"] == 2 and anns[5]["bbox"] == [1, 1, 10, 10]
    assert anns[7]["bbox"] == [55, 25, 22, 21] and anns[7]["area"] == 22 * 21 and anns[7]["category_id"] == 2
    assert anns[8] == POOLED["annotations"][3]                 # not accepted: unchanged
    assert [i["file_name"] for i in fixed["images"]] == ["a/1.jpg", "a/2.jpg"]
    assert POOLED["annotations"][0]["category_id"] == 1       # the pooled labels themselves untouched


def test_nothing_accepted_changes_nothing():
    fixed = apply_corrections(POOLED, [])
    assert fixed["annotations"] == POOLED["annotations"]


def test_accept_list_by_rank_range_and_annotation_id(tmp_path):
    text = tmp_path / "accept.txt"
    text.write_text("# my review\nrank:1\nrank:3-4   # two more\nid:8\n")
    assert read_accept_list(text, len(ENTRIES)) == ({0, 2, 3}, {8})
    as_json = tmp_path / "accept.json"
    as_json.write_text(json.dumps({"ranks": [2], "annotation_ids": [7]}))
    assert read_accept_list(as_json, len(ENTRIES)) == ({1}, {7})
    bad = tmp_path / "bad.txt"
    bad.write_text("rank:9\n")
    with pytest.raises(AcceptListError, match="rank 9 is not in label_errors.json"):
        read_accept_list(bad, len(ENTRIES))
    bad.write_text("3\n")
    with pytest.raises(AcceptListError, match="line 1"):
        read_accept_list(bad, len(ENTRIES))


def test_command_writes_exactly_the_accepted_corrections(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "annotations.json").write_text(json.dumps(POOLED))
    (out / "label_errors.json").write_text(json.dumps(ENTRIES))
    accept = tmp_path / "accept.txt"
    accept.write_text("rank:2\nid:8\n")
    target = tmp_path / "fixed.json"
    assert main(["--output", str(out), "--accept", str(accept), "--write-fixed", str(target)]) == 0
    fixed = json.loads(target.read_text())
    anns = by_id(fixed)
    assert sorted(anns) == [5, 6, 7]                           # 8 removed (spurious), nothing added
    assert anns[5]["category_id"] == 2                         # rank 2: wrong_class applied
    assert anns[7]["bbox"] == [50, 20, 20, 20]                 # rank 3 (loose) not accepted
    assert "2 accepted correction(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):                            # --accept needs --write-fixed
        main(["--output", str(out), "--accept", str(accept)])
