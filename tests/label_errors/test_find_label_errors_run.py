"""The whole tool on tiny generated shapes: 2 folds of 2 training iterations each (CPU, about half a
minute, most of it two training processes starting): the folds, their honest predictions and the
outputs (ranked JSON, CSV, gallery, summary)."""
from __future__ import annotations

import csv
import json

import pytest
from omegaconf import OmegaConf
from PIL import Image

pytest.importorskip("cleanlab")

from detector.cli.find_label_errors import main  # noqa: E402
from detector.label_errors.kinds import KINDS  # noqa: E402
from detector.label_errors.suspects import ENTRY_FIELDS  # noqa: E402


def tiny_shapes(root):
    return [f"dataset.root={root}", "dataset.num_train=10", "dataset.num_test=4", "dataset.image_size=128",
            "model.input.min_size_test=128", "model.input.max_size_test=128", "aug.min_size=[128]", "aug.max_size=128",
            "dataloader.batch_size=2", "dataloader.num_workers=0", "solver.warmup_iters=2", "train.log_period=1",
            "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=50",
            "model.roi_heads.batch_size_per_image=32", "model.roi_heads.fc_dim=64", "model.fpn.out_channels=64",
            "train.max_iter=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("label_errors")
    out = tmp / "out"
    code = main([*tiny_shapes(tmp / "shapes"), "--output", str(out), "--folds", "2", "--top", "3"])
    assert code == 0, (out / "log.txt").read_text()[-3000:] if (out / "log.txt").exists() else "no log"
    return out


def test_each_fold_trains_on_the_others_with_the_users_overrides_and_predicts_only_its_own(run):
    folds = json.loads((run / "folds.json").read_text())["folds"]
    pooled = json.loads((run / "annotations.json").read_text())
    assert len(folds) == 2 and sorted(folds[0] + folds[1]) == sorted(i["file_name"] for i in pooled["images"])
    id_of = {i["file_name"]: i["id"] for i in pooled["images"]}
    for k, part in enumerate(folds):
        cfg = OmegaConf.load(run / "folds" / str(k) / "config.yaml")
        assert cfg.dataset._target_ == "detector.label_errors.fold_format.HeldOutFold" and cfg.dataset.fold == k
        assert cfg.train.max_iter == 2 and cfg.model.roi_heads.fc_dim == 64          # the user's overrides arrived
        assert cfg.model.roi_heads.score_thresh == 0.01                             # predictions down to 0.01
        results = json.loads((run / "folds" / str(k) / "inference" / "coco_instances_results.json").read_text())
        assert results and {r["image_id"] for r in results} <= {id_of[p] for p in part}   # honest: its own fold only
        assert min(r["score"] for r in results) >= 0.01
        assert "Training from iteration 0 to 2." in (run / "folds" / str(k) / "log.txt").read_text()


def test_outputs_ranked_json_csv_gallery_and_summary(run):
    entries = json.loads((run / "label_errors.json").read_text())
    assert entries, "a 2-iteration model disagrees with some labels"
    assert all(list(e) == list(ENTRY_FIELDS) and e["kind"] in KINDS for e in entries)
    assert [e["score"] for e in entries] == sorted((e["score"] for e in entries), reverse=True)
    with open(run / "label_errors.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(ENTRY_FIELDS) and len(rows) == len(entries) + 1
    assert [r[0] for r in rows[1:]] == [e["image"] for e in entries]
    images = list(dict.fromkeys(e["image"] for e in entries))
    gallery = sorted((run / "gallery").glob("*.png"))
    assert len(gallery) == min(3, len(images))
    assert gallery[0].name.startswith("001_") and Image.open(gallery[0]).size[0] == 128
    summary = (run / "summary.md").read_text()
    assert "| kind | suspects |" in summary and "`label_errors.confident_score`: 0.5" in summary
    assert f"{len(entries)} suspects" in summary and "train.max_iter=2 per fold" in summary
