"""The folds' trainings: the user's overrides reach each one, and the job's time is shared out."""
from __future__ import annotations

import logging
from pathlib import Path

from detector.label_errors.fold_training import fold_overrides, job_budget
from detector.label_errors.settings import load_settings, split_overrides

LOG = logging.getLogger("test")


def test_every_user_override_reaches_the_fold_with_the_held_out_dataset():
    user = ["dataset=bccd", "model=retinanet_fpn", "train.max_iter=7"]
    got = fold_overrides(user, Path("/o/annotations.json"), Path("/o/folds.json"), 2, Path("/o/folds/2"),
                         "model.postprocess.score_thresh", 0.01, None)
    assert got[:3] == user
    assert "dataset._target_=detector.label_errors.fold_format.HeldOutFold" in got
    assert "++dataset.fold=2" in got and "++dataset.pooled='/o/annotations.json'" in got
    assert "model.postprocess.score_thresh=0.01" in got and "output_dir='/o/folds/2'" in got
    assert not any(o.startswith("train.time_budget") for o in got)
    timed = fold_overrides(user[:2], Path("/o/a.json"), Path("/o/f.json"), 0, Path("/o/0"), "k", 0.01, 412.4)
    assert timed[-1] == "train.time_budget=412s"


def test_the_jobs_time_is_shared_out_among_the_folds_left():
    settings = load_settings()
    assert job_budget(["train.max_iter=300", "train.time_budget=10m"], settings, "cpu", LOG).total_s is None
    given = job_budget(["train.time_budget=40m"], settings, "cpu", LOG)
    assert given.total_s == 2400
    # 100 s already spent, 30 s kept for the scoring, 4 folds to go: 2270 / 4 each.
    assert given.fold_seconds(started=0.0, now=100.0, folds_left=4, reserve_s=30) == (2400 - 100 - 30) / 4
    # A fold that overran leaves less to the others, never below a minute.
    assert given.fold_seconds(started=0.0, now=2390.0, folds_left=1, reserve_s=30) == 60.0
    assert job_budget([], settings, "cpu", LOG).total_s == 30 * 60          # the CPU default, conf/label_errors
    assert job_budget([], settings, "cuda", LOG).total_s == 60 * 60


def test_label_errors_keys_are_the_tools_and_the_rest_go_to_training():
    own, training = split_overrides(["dataset=bccd", "label_errors.confident_score=0.7", "train.max_iter=3"])
    assert own == ["label_errors.confident_score=0.7"] and training == ["dataset=bccd", "train.max_iter=3"]
    assert load_settings(own).confident_score == 0.7
    try:
        load_settings(["label_errors.confidence=0.7"])
    except ValueError as error:
        assert "no key 'confidence'" in str(error) and "confident_score" in str(error)
    else:
        raise AssertionError("an unknown key must be refused")
