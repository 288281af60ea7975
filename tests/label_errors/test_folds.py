"""The folds: seeded, stratified as the carved test split, disjoint; a fold's training never sees its images."""
from __future__ import annotations

import json

from detector.data.split_carving import stratified_folds
from detector.label_errors.fold_format import HeldOutFold
from detector.label_errors.job import draw_folds


def images(n_common=30, n_rare=5):
    # Class 3 is rare: each fold must still get its share (one image or more each, with 4 folds and 5 images).
    return [(f"c{i:02d}", [1, 2] if i % 2 else [1]) for i in range(n_common)] + [(f"r{i}", [3, 1]) for i in range(n_rare)]


def test_folds_cover_every_image_once_balanced_and_stratified():
    folds = stratified_folds(images(), 4, seed=0)
    every = [n for f in folds for n in f]
    assert sorted(every) == sorted(n for n, _ in images()) and len(every) == len(set(every))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert all(sum(n.startswith("r") for n in f) >= 1 for f in folds)      # the rare class in every fold
    assert stratified_folds(images(), 4, seed=0) == folds
    assert stratified_folds(images(), 4, seed=1) != folds


def test_held_out_fold_trains_on_the_others_and_tests_on_itself(tmp_path):
    pooled = {"images": [{"id": i, "file_name": str(tmp_path / f"{i}.jpg"), "name": f"{i}.jpg", "width": 64,
                          "height": 64} for i in range(1, 9)],
              "annotations": [{"id": i, "image_id": i, "bbox": [4, 4, 20, 20], "category_id": 1 + i % 2, "iscrowd": 0}
                              for i in range(1, 9)],
              "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(pooled))
    parts = draw_folds(pooled, 2, 0)
    (tmp_path / "folds.json").write_text(json.dumps({"seed": 0, "folds": parts}))
    fmt = HeldOutFold(pooled=str(tmp_path / "annotations.json"), folds_file=str(tmp_path / "folds.json"), fold=1,
                      name="mine", root="/somewhere/else", train_split="trainval")   # the dataset's own keys ride along
    train = {r.path for r in fmt.index("train").records}
    test = {r.path for r in fmt.index("test").records}
    assert test == set(parts[1]) and train == set(parts[0]) and not train & test
    assert fmt.class_names() == ["a", "b"]
    assert {a["image_id"] for a in fmt.index("test").gt_dict["annotations"]} == \
        {i["id"] for i in pooled["images"] if i["file_name"] in test}
    every = HeldOutFold(pooled=str(tmp_path / "annotations.json"), folds_file=str(tmp_path / "folds.json"), fold=-1,
                        name="mine")
    assert len(every.index("test").records) == 8
