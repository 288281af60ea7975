"""schedule=auto weighs the input size against the time budget: large photos with tiny objects
under a short CPU budget get a smaller size (logged with its figures); a long budget, a GPU or
an explicit train.max_iter leave it alone; the user's sizes and recipe.budget.min_iters win; the
estimate is the same every time (load_config + build_model must give the run's model)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from detector import load_config
from detector.recipe import apply as recipe_apply
from detector.recipe.budget import TrainingBudget
from detector.recipe.choices import RecipeContext, choose
from detector.recipe.statistics import split_statistics

SETTINGS = OmegaConf.to_container(load_config(["schedule=auto"]).recipe, resolve=True)


def cpu_budget(minutes: float, threads: int = 2) -> TrainingBudget:
    # The reserved share of conf/runtime/default.yaml: margin 0.02 + max_eval_share 0.15.
    return TrainingBudget(seconds=minutes * 60, device="cpu", threads=threads, images_per_step=4,
                          reserved_share=0.17)


def photos(images=40):
    """4000 x 3000 photos with 20-30 px objects: the objects want the largest size (800 px)."""
    return split_statistics([SimpleNamespace(width=4000, height=3000, labels=np.array([1, 1]),
                                             boxes=np.array([[5, 5, 25, 25], [5, 5, 35, 29]], float))
                             for _ in range(images)])


def sizes(stats, budget=None, settings=SETTINGS, **given):
    ctx = RecipeContext(levels=5, backbone_weights=False, model_weights=False, budget=budget, **given)
    return {c.key: c for c in choose(stats, settings, ctx)}


def step_seconds_by_hand(train_sizes, train_max, aspect=4 / 3, images=4, us_per_pixel=1.8):
    """The cost model written out: images x the mean of shortest x capped longest edge x the constant."""
    return images * np.mean([t * min(t * aspect, train_max) for t in train_sizes]) * us_per_pixel * 1e-6


def test_a_short_cpu_budget_lowers_every_size_and_logs_the_figures():
    stats = photos()
    wanted = sizes(stats)
    assert wanted["model.input.min_size_test"].value == 800
    c = sizes(stats, cpu_budget(15))
    size = c["model.input.min_size_test"].value
    train, train_max = c["aug.min_size"].value, c["aug.max_size"].value
    # 15 min less 17% and 20 s: 727 s of steps. At 800 px a step is ~6.2 s (~117 iterations);
    # the largest size that buys 500 is 384 px: 4 x ~197 kpx x 1.8 us = 1.42 s.
    assert size == 384 and train == [352, 384, 416] and train_max == 576
    assert c["model.input.max_size_test"].value == 512                     # 384 x 4/3
    train_s = 15 * 60 * (1 - 0.17) - 20
    assert train_s // step_seconds_by_hand(train, train_max) >= 500
    assert train_s // step_seconds_by_hand([384, 416, 448], 640) < 500     # 416 px would buy too few
    assert train_s // step_seconds_by_hand(wanted["aug.min_size"].value, wanted["aug.max_size"].value) < 150
    assert all(s % 32 == 0 for s in [size, *train, train_max])
    reason = c["model.input.min_size_test"].reason
    for figure in ("15.0 min on cpu (2 threads)", "about 117 iterations at 800 px (6.17 s each",
                   "fewer than recipe.budget.min_iters=500", "lowered to 384 px, 1.42 s each, about 511 iterations",
                   "100% of the boxes (wanted: 5%) measure below 16 px"):
        assert figure in reason, (figure, reason)
    assert c["model.input.min_size_test"].warning
    # Anchors follow the chosen size (as they follow an overridden one).
    assert c["model.anchor_generator.sizes"].value[0] == SETTINGS["min_anchor"]


def test_a_budget_too_short_for_any_size_stops_at_min_input_size_and_says_so():
    c = sizes(photos(), cpu_budget(3))
    assert c["model.input.min_size_test"].value == SETTINGS["min_input_size"] == 320
    assert c["aug.min_size"].value == [288, 320, 352]
    assert "recipe.min_input_size=320 is the floor" in c["model.input.min_size_test"].reason


def test_a_long_budget_a_gpu_or_no_budget_keep_the_size_the_objects_want():
    stats = photos()
    unbudgeted = {k: c.value for k, c in sizes(stats).items()}
    for budget in (cpu_budget(180), TrainingBudget(30 * 60, "cuda", 2, 4, 0.17), None):
        c = sizes(stats, budget)
        assert {k: v.value for k, v in c.items()} == unbudgeted, budget
    assert "at least recipe.budget.min_iters=500" in sizes(stats, cpu_budget(180))["model.input.min_size_test"].reason


def test_more_threads_buy_a_larger_size():
    one, two, sixteen = (sizes(photos(), cpu_budget(15, threads))["model.input.min_size_test"].value
                         for threads in (1, 2, 16))
    assert one < two == 384 < sixteen


def test_the_users_sizes_and_min_iters_win():
    stats = photos()
    unbudgeted = sizes(stats)
    budget = cpu_budget(15)
    given_test = sizes(stats, budget, given_min_size_test=640)
    given_train = sizes(stats, budget, given_train_sizes=True)
    for c in (given_test, given_train):
        assert c["model.input.min_size_test"].value == 800          # the recipe's own, not the budget's
        assert c["aug.min_size"].value == unbudgeted["aug.min_size"].value
    assert given_test["model.anchor_generator.sizes"].value == sizes(stats, given_min_size_test=640)[
        "model.anchor_generator.sizes"].value
    fewer = {**SETTINGS, "budget": {**SETTINGS["budget"], "min_iters": 200}}
    assert sizes(stats, budget, fewer)["model.input.min_size_test"].value == 608
    off = {**SETTINGS, "budget": {**SETTINGS["budget"], "min_iters": 0}}
    assert sizes(stats, budget, off)["model.input.min_size_test"].value == 800


def test_the_estimate_is_the_same_every_time():
    stats, budget = photos(), cpu_budget(15)
    first = [(c.key, c.value, c.reason) for c in choose(stats, SETTINGS, RecipeContext(5, False, False, budget=budget))]
    again = [(c.key, c.value, c.reason) for c in choose(photos(), SETTINGS, RecipeContext(5, False, False,
                                                                                       budget=cpu_budget(15)))]
    assert first == again


@pytest.fixture
def photo_statistics(monkeypatch):
    """The config path reads these figures instead of a dataset's (no data is read)."""
    monkeypatch.setattr(recipe_apply, "training_statistics", lambda cfg: photos())
    recipe_apply._choices_cache.clear()
    yield
    recipe_apply._choices_cache.clear()


def test_load_config_weighs_the_budget_unless_max_iter_is_given(photo_statistics):
    def resolved_size(*overrides):
        cfg = load_config(["schedule=auto", "train.device=cpu", *overrides])
        return recipe_apply.training_budget(cfg), OmegaConf.select(cfg, "model.input.min_size_test")

    budget, size = resolved_size("train.time_budget=15m")
    assert budget.reserved_share == pytest.approx(0.17)
    assert budget == TrainingBudget(900.0, "cpu", torch.get_num_threads(), 4, budget.reserved_share)
    assert size == sizes(photos(), budget)["model.input.min_size_test"].value < 800
    assert resolved_size("train.time_budget=15m") == (budget, size)          # the same model every time
    assert resolved_size("train.time_budget=15m", "train.max_iter=100") == (None, 800)   # max_iter wins
    assert resolved_size("train.max_iter=100") == (None, 800)
    auto, _ = resolved_size()                                                # schedule=auto's default budget
    assert auto.seconds == 600.0
    assert resolved_size("train.time_budget=15m", "recipe.budget.min_iters=0")[1] == 800
    assert resolved_size("train.time_budget=15m", "model.input.min_size_test=512")[1] == 512
    assert resolved_size("train.time_budget=15m", "aug.min_size=[800]")[1] == 800   # the user's training size


def test_a_resume_keeps_the_sizes_and_anchors_its_checkpoint_recorded(caplog):
    # The size rule depends on the thread count: resumed on another machine the recipe may choose
    # another size (and anchors); the resumed run must continue the model its checkpoint holds.
    import logging

    from detector.recipe.choices import Choice
    cfg = OmegaConf.create({"model": {"input": {"min_size_test": 320}, "anchor_generator": {"sizes": [16, 32]}},
                            "aug": {"min_size": [288, 320]}})
    applied = [Choice("model.input.min_size_test", 320, "r"), Choice("model.anchor_generator.sizes", [16, 32], "r"),
               Choice("aug.min_size", [288, 320], "r")]
    recorded = OmegaConf.create({"model": {"input": {"min_size_test": 512}, "anchor_generator": {"sizes": [16, 32]}},
                                 "aug": {"min_size": [480, 512]}})
    logger = logging.getLogger("test_recipe_budget")
    with caplog.at_level(logging.WARNING, logger="test_recipe_budget"):
        kept = recipe_apply.keep_recorded_choices(cfg, applied, recorded, logger)
    assert kept == ["model.input.min_size_test", "aug.min_size"]
    assert cfg.model.input.min_size_test == 512 and list(cfg.aug.min_size) == [480, 512]
    assert list(cfg.model.anchor_generator.sizes) == [16, 32]
    assert "resumed checkpoint" in caplog.text and "320" in caplog.text
    assert recipe_apply.keep_recorded_choices(cfg, applied, None, logger) == []   # a checkpoint without a config
