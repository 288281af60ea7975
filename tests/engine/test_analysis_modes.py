"""test.analysis: the pictures of the final evaluation by default (also when an early stop makes
an evaluation final only afterwards), of every evaluation with `every`, none with `off`; the
booleans of earlier versions keep their meaning. (`every` on a run: tests/engine/test_run_folder.py;
the default on a run with a mid-way evaluation: tests/tools/test_train_net.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest

from reliability_helpers import tiny, train_net  # on pytest.ini's pythonpath

from detector.evaluation.analysis_schedule import analysis_mode, draws_pictures

# A model that cannot change: every evaluation gives the same AP, so only the first improves.
FROZEN = ["backbone.norm=frozen_bn", "solver.base_lr=1e-12"]


@pytest.mark.parametrize("value, mode", [("final", "final"), ("every", "every"), ("off", "off"), (True, "every"),
                                         (False, "off"), ("true", "every"), ("False", "off"), (" Every ", "every")])
def test_modes_and_the_old_booleans(value, mode):
    assert analysis_mode(value) == mode


@pytest.mark.parametrize("value", ["always", "", 1, "none"])
def test_an_unknown_mode_names_the_key_and_the_choices(value):
    with pytest.raises(ValueError, match=r"test\.analysis=.*final.*every.*off"):
        analysis_mode(value)


def test_which_evaluations_draw():
    assert [draws_pictures("final", final) for final in (False, True)] == [False, True]
    assert [draws_pictures("every", final) for final in (False, True)] == [True, True]
    assert [draws_pictures("off", final) for final in (False, True)] == [False, False]


def test_an_unknown_mode_is_refused_before_training(tmp_path):
    proc = train_net(tiny(tmp_path / "shapes", tmp_path / "out", "test.analysis=sometimes"), check=False)
    assert proc.returncode != 0
    assert "test.analysis='sometimes': use final" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_an_early_stop_draws_the_pictures_of_its_last_evaluation(tmp_path):
    """Patience 1 with a frozen AP: evaluations at 2 and 4 of 40, stop at 4. The evaluation at 4
    is known as final only after it ran; the default mode draws its pictures then, not 2's."""
    out = tmp_path / "out"
    train_net(tiny(tmp_path / "shapes", out, "train.max_iter=40", "train.eval_period=2", "train.checkpoint_period=40",
                   "train.early_stop_patience=1", "test.analysis_grid_images=2", *FROZEN))
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["4"]
    assert (out / "eval" / "4" / "gt_vs_predictions.png").stat().st_size > 1000
    assert "eval/4/gt_vs_predictions.png" in (out / "summary.md").read_text()
