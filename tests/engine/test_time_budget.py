"""train.time_budget: reading the value, the plan from measured figures (a fake clock), the
hook that fixes it in a running Trainer, an explicit max_iter winning, and a run resumed
under a budget ending bit-identical to an uninterrupted one."""
from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from detector import load_config
from detector.engine.time_budget import (BudgetPlan, TimeBudgetError, TimeBudgetHook, parse_time_budget, plan_budget,
                                         refit_plan, revise_plan, setup_budget)
from detector.engine.trainer import HookBase, Trainer
from reliability_helpers import tiny  # on pytest.ini's pythonpath


def test_budget_values():
    assert parse_time_budget("15m") == 900 and parse_time_budget("2h") == 7200 and parse_time_budget(90) == 5400
    assert parse_time_budget("1h30m") == 5400 and parse_time_budget("45s") == 45 and parse_time_budget(None) is None
    assert parse_time_budget("auto", "cpu", {"cpu": 10, "cuda": 30}) == 600
    assert parse_time_budget("auto", "cuda", {"cpu": 10, "cuda": 30}) == 1800
    for bad in ("soon", "-5m", 0):
        with pytest.raises(TimeBudgetError, match="train.time_budget"):
            parse_time_budget(bad)


def test_plan_fits_training_and_every_evaluation_in_the_budget():
    plan = plan_budget(budget_s=600, elapsed_s=100, iteration=60, step_s=1.0, eval_s=20, evaluations=4,
                       max_eval_share=0.15, margin=0.05)
    evals = (plan.max_iter - 1) // plan.eval_period
    assert evals == 3                                  # 4 wanted; 15% of the 470 s left holds 3 of 20 s
    spent = plan.elapsed_s + (plan.max_iter - 60) * 1.0 + (evals + 1) * 20
    assert 570 - 1.0 < spent <= 570                    # the budget less its 5% margin, to one step
    assert plan.checkpoint_period == plan.eval_period and plan.early_stop_patience == 2
    # A budget already spent: no more training, only the final evaluation.
    late = plan_budget(600, 590, 60, 1.0, 20, 4, 0.15, 0.05)
    assert late.max_iter == 60 and late.eval_period == 0
    # Multistep steps keep their fractions of the schedule.
    steps = plan_budget(600, 0, 10, 1.0, 0, 4, 0.15, 0.0, schedule_steps=[600, 800], schedule_max_iter=900)
    assert steps.max_iter == 610 and steps.lr_steps == [407, 542]


class Counter:
    """A fake clock that advances `step_s` at every training step."""

    def __init__(self, step_s):
        self.now, self.step_s = 0.0, step_s

    def __call__(self):
        return self.now


class FakeEvaluation(HookBase):
    """Evaluates (advances the fake clock by `eval_s`) every `period` iterations up to `last`
    (0: no limit) and at the end, as EvalHook does; `at` lists where."""

    def __init__(self, clock: Counter, eval_s: float):
        self.clock, self.eval_s = clock, eval_s
        self.period, self.last, self.at = 0, 0, []

    def after_step(self):
        done = self.trainer.iter + 1
        if done >= self.trainer.max_iter or (self.period and done % self.period == 0
                                             and (not self.last or done <= self.last)):
            self.clock.now += self.eval_s
            self.at.append(done)


def test_hook_fixes_max_iter_after_timing_and_the_loop_follows_it():
    clock = Counter(2.0)
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(m, batch):
        clock.now += clock.step_s
        return {"loss": m(batch).pow(2).mean()}

    plans = []

    def make_plan(step_s, elapsed_s, iteration):
        return plan_budget(100, elapsed_s, iteration, step_s, 0.0, 0, 0.15, 0.0)

    trainer = Trainer(model, optimizer, iter(lambda: torch.ones(1, 2), None), max_iter=5, step_fn=step)
    hook = TimeBudgetHook(timing_from=2, timing_iters=3, started_at=-10.0, make_plan=make_plan,
                          apply_plan=lambda plan: (plans.append(plan), setattr(trainer, "max_iter", plan.max_iter)),
                          clock=clock, now=clock)
    trainer.register_hooks([hook])
    trainer.train()
    plan = plans[0]
    assert plan.planned_at == 5 and plan.step_s == pytest.approx(2.0)
    assert plan.elapsed_s == pytest.approx(20.0)       # 10 s before training + 5 steps of 2 s
    assert plan.max_iter == 5 + 40                     # (100 - 20) / 2
    assert trainer.iter == 45 and clock.now == 45 * 2.0   # the loop ran every planned step


def test_a_few_slow_timing_steps_do_not_cut_the_plan_short():
    """Five timed steps of 2 s, two of them slowed to 20 s by another process: the plan takes the
    median step (2 s), where the mean (9.2 s) would plan less than a quarter of the run."""
    clock = Counter(2.0)
    durations = iter([2.0, 2.0, 2.0, 20.0, 2.0, 20.0, 2.0] + [2.0] * 100)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step(m, batch):
        clock.now += next(durations)
        return {"loss": m(batch).pow(2).mean()}

    trainer = Trainer(model, optimizer, iter(lambda: torch.ones(1, 2), None), max_iter=7, step_fn=step)
    hook = TimeBudgetHook(timing_from=2, timing_iters=5, started_at=0.0,
                          make_plan=lambda step_s, elapsed_s, iteration: plan_budget(200, elapsed_s, iteration, step_s,
                                                                                     0.0, 0, 0.15, 0.0),
                          apply_plan=lambda plan: setattr(trainer, "max_iter", plan.max_iter), clock=clock, now=clock)
    trainer.register_hooks([hook])
    trainer.train()
    assert hook.plan.step_s == pytest.approx(2.0) and hook.plan.elapsed_s == pytest.approx(50.0)
    assert hook.plan.max_iter == 7 + 75                 # (200 - 50) / 2


@pytest.mark.parametrize("reserve_s, ends_at", [(0.0, 23), (10.0, 22)])
def test_a_machine_that_slows_after_the_plan_still_ends_within_the_budget(reserve_s, ends_at):
    """Timed at 2 s per step, planned to 43; after step 10 each step takes 5 s. The run ends
    early, at the first step after which only the final evaluation (4 s) and half the margin
    (`reserve_s`, for the pictures and the summary after it) still fit."""
    clock = Counter(2.0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step(m, batch):
        clock.now += clock.step_s
        if clock.now >= 20.0:   # after 10 steps (the plan was made at 5), each step takes 5 s
            clock.step_s = 5.0
        return {"loss": m(batch).pow(2).mean()}

    trainer = Trainer(model, optimizer, iter(lambda: torch.ones(1, 2), None), max_iter=5, step_fn=step)
    hook = TimeBudgetHook(timing_from=2, timing_iters=3, started_at=-10.0,
                          make_plan=lambda step_s, elapsed_s, iteration: plan_budget(100, elapsed_s, iteration, step_s,
                                                                                     4.0, 0, 0.15, 0.0),
                          apply_plan=lambda plan: setattr(trainer, "max_iter", plan.max_iter), clock=clock, now=clock,
                          reserve_s=reserve_s)
    trainer.register_hooks([hook])
    trainer.train()
    assert hook.plan.max_iter == 5 + 38                 # (100 - 20 - 4) / 2 at the timed speed
    ended_at = clock.now + 10.0                         # seconds since the process started
    assert trainer.max_iter < hook.plan.max_iter and trainer.iter == trainer.max_iter
    # At 5 s per step, after 85 s then 90 s: the final evaluation (4 s) and half the margin
    # still fit, else the run ends there.
    assert trainer.iter == ends_at and ended_at <= 100 - 4.0 - reserve_s / 2


def test_the_revision_fits_the_measured_steps_and_evaluations_in_the_budget():
    """bccd's first plan rested on slow timed steps (1.3 s) and an evaluation estimated at 19 s;
    at the first evaluation the run has measured 1.0 s and 6 s. The revision spends what was
    left on steps, keeping the evaluation period, and every cost still fits."""
    first = plan_budget(600, 79, 60, 1.3, 19.0, 4, 0.15, 0.05)
    assert (first.max_iter, first.eval_period) == (379, 95)
    spent = 79 + (95 - 60) * 1.0 + 6.0
    revised = revise_plan(first, spent, 95, 1.0, 6.0, 0.05)
    # The longest run with every periodic evaluation would be 515, with one at 475, 40 iterations
    # before the final one: that one is skipped (the last periodic is 380) and trained instead.
    assert (revised.max_iter, revised.last_periodic_eval) == (521, 380)
    periodic = 380 // 95 - 1                                # evaluations after the revision, before the final
    used = spent + (revised.max_iter - 95) * 1.0 + (periodic + 1) * 6.0
    assert 570 - 1.0 < used <= 570                          # one step short of the budget less 5%
    assert revised.eval_period == 95 and revised.checkpoint_period == 95
    assert (revised.revised_at, revised.first_max_iter, revised.planned_at) == (95, 379, 60)
    # shapes, 5 min: revised at its only periodic evaluation (148), the longest run that fits
    # (305) would evaluate at 296 and again at 305. That evaluation is skipped and trained instead.
    shapes = BudgetPlan(300, 60, 51, 0.82, 20.0, 296, 148, 148, 0)
    skipped = revise_plan(shapes, 133, 148, 0.728, 18.6, 0.05)
    assert (skipped.max_iter, skipped.last_periodic_eval) == (331, 148)
    assert 133 + (331 - 148) * 0.728 + 18.6 <= 285 < 133 + (332 - 148) * 0.728 + 18.6
    # Over budget already: the revision ends the run where it is.
    assert revise_plan(first, 600, 95, 1.0, 6.0, 0.05).max_iter == 95
    # Multistep steps still ahead keep their fraction; one already passed stays.
    stepped = BudgetPlan(600, 60, 79, 1.3, 19.0, 379, 95, 95, 0, [80, 300])
    assert revise_plan(stepped, spent, 95, 1.0, 6.0, 0.05).lr_steps == [80, round(300 * 521 / 379)]
    # No evaluation period: checkpoint at the (new) end only, revision half-way.
    quiet = plan_budget(600, 79, 60, 1.3, 19.0, 0, 0.15, 0.05)
    assert quiet.revision_iteration == 60 + (quiet.max_iter - 60) // 2
    assert revise_plan(quiet, 300, quiet.revision_iteration, 1.0, 19.0, 0.05).checkpoint_period == (
        quiet.revision_iteration + int((570 - 300 - 19.0) // 1.0))


def test_periodic_evaluations_stop_at_the_plans_last_periodic_one():
    from detector.engine.hooks import EvalHook

    model = torch.nn.Linear(2, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), iter(lambda: torch.ones(1, 2), None),
                      max_iter=10, step_fn=lambda m, batch: {"loss": m(batch).pow(2).mean()})
    evaluated = []
    hook = EvalHook(3, lambda iteration: (evaluated.append(iteration) or {}, []))
    hook.last_periodic = 6
    trainer.register_hooks([hook])
    trainer.train()
    assert evaluated == [3, 6, 10]   # not 9: the final evaluation follows at 10


def test_hook_revises_the_plan_at_the_first_evaluation_and_the_run_ends_within_the_budget():
    """Timed at 2 s per step with a 10 s evaluation estimate; the steps then take 1 s and the
    evaluation 3 s. Revised at the first evaluation (iteration 10), the run uses the budget."""
    clock = Counter(2.0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step(m, batch):
        clock.now += clock.step_s
        if clock.now >= 10.0:   # after the 5 timed steps
            clock.step_s = 1.0
        return {"loss": m(batch).pow(2).mean()}

    evaluation = FakeEvaluation(clock, 3.0)
    trainer = Trainer(model, optimizer, iter(lambda: torch.ones(1, 2), None), max_iter=5, step_fn=step)

    def apply(plan):
        trainer.max_iter, evaluation.period, evaluation.last = plan.max_iter, plan.eval_period, plan.last_periodic_eval

    hook = TimeBudgetHook(timing_from=2, timing_iters=3, started_at=0.0,
                          make_plan=lambda step_s, elapsed_s, iteration: plan_budget(100, elapsed_s, iteration, step_s,
                                                                                     10.0, 4, 0.25, 0.0),
                          apply_plan=apply, clock=clock, now=clock,
                          revise=lambda plan, *figures: revise_plan(plan, *figures, margin=0.0))
    trainer.register_hooks([hook, evaluation, hook.revision_hook()])
    trainer.train()
    # First plan: 90 s left at 2 s per step and 10 s per evaluation: 2 periodic, 30 steps.
    assert (hook.plan.first_max_iter, hook.plan.eval_period, hook.plan.revised_at) == (35, 12, 12)
    assert hook.plan.step_s == pytest.approx(1.0) and hook.plan.eval_s == pytest.approx(3.0)
    # 80 s left at iteration 12: with every periodic evaluation 74 iterations fit, one evaluation
    # at 72; skipping it (the last periodic is 60) fits 77.
    assert (hook.plan.max_iter, hook.plan.last_periodic_eval) == (77, 60)
    assert evaluation.at == [12, 24, 36, 48, 60, 77] and trainer.iter == 77
    assert 100 - 1.0 < clock.now <= 100   # the budget used to within one step, not overrun


def test_periodic_evaluations_refit_the_plan_to_steps_that_turn_slower_or_faster():
    """bccd under 10 min: revised at 107 from steps of 0.85 s, the steps then took about 1.05 s
    and the run was cut at 548 of 620 with its cosine unfinished. Here: revised at iteration 12
    from 1 s steps; from iteration 20 on each step takes 1.5 s. The periodic evaluations after
    the revision shorten max_iter, so the run ends at its planned max_iter, with the LR
    schedule's end, and within the budget, where without them it is cut. Steps that turn faster
    (0.7 s) lengthen the plan, so the budget is used."""
    from detector.solver.lr_scheduler import WarmupLR

    def run(refit, later_step_s=1.5):
        clock = Counter(2.0)
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)   # the LR is read as a fraction of this
        scheduler = WarmupLR(optimizer, max_iter=5, warmup_iters=0, decay="cosine")

        def step(m, batch):
            clock.now += clock.step_s
            clock.step_s = 2.0 if clock.now < 10.0 else 1.0 if clock.now < 22.0 else later_step_s
            return {"loss": m(batch).pow(2).mean()}

        evaluation, lrs = FakeEvaluation(clock, 3.0), []
        trainer = Trainer(model, optimizer, iter(lambda: torch.ones(1, 2), None), max_iter=5, step_fn=step)

        class LR(HookBase):   # the LR of the next step
            def after_step(self):
                scheduler.step()
                lrs.append(optimizer.param_groups[0]["lr"])

        def apply(plan):
            trainer.max_iter = scheduler.max_iter = plan.max_iter
            evaluation.period, evaluation.last = plan.eval_period, plan.last_periodic_eval

        hook = TimeBudgetHook(timing_from=2, timing_iters=3, started_at=0.0,
                              make_plan=lambda step_s, elapsed_s, iteration: plan_budget(
                                  100, elapsed_s, iteration, step_s, 10.0, 4, 0.25, 0.0),
                              apply_plan=apply, clock=clock, now=clock,
                              revise=lambda plan, *figures: revise_plan(plan, *figures, margin=0.0),
                              refit=refit)
        trainer.register_hooks([hook, LR(), evaluation, hook.revision_hook()])
        trainer.train()
        return hook.plan, trainer, clock, lrs

    cut_plan, cut, cut_clock, cut_lrs = run(None)
    assert cut_plan.max_iter == 77 and cut.iter < 77   # the plan of the revision, cut by the guard
    assert cut_lrs[-1] > 1e-4                          # its cosine was far from its end (a tenth of the peak)
    refit = lambda plan, *figures: refit_plan(plan, *figures, margin=0.0)   # noqa: E731
    plan, trainer, clock, lrs = run(refit)
    assert plan.revised_at == 12 and plan.first_max_iter == 35 and 0 < plan.refitted_at < plan.max_iter < 77
    assert trainer.iter == plan.max_iter               # ended where the plan says, not cut
    assert lrs[-1] < 1e-5 and clock.now <= 100         # the cosine ended, within the budget
    assert plan.describe_refit().startswith(f"shortened at iteration {plan.refitted_at}")
    # Faster steps: the plan of the revision (77) is lengthened, and still ends within the budget.
    fast, fast_trainer, fast_clock, _ = run(refit, later_step_s=0.7)
    assert fast.max_iter > 77 and fast_trainer.iter == fast.max_iter and 100 - 1.0 < fast_clock.now <= 100
    assert fast.describe_refit().startswith(f"lengthened at iteration {fast.refitted_at}")
    # A plan that still fits stands unless 2% more iterations (here 2 of 56) fit.
    at = plan.refitted_at
    gain = {revise_plan(plan, spent / 10, at, 1.5, 3.0, 0.0).max_iter - plan.max_iter: spent / 10
            for spent in range(300, 900)}
    assert refit_plan(plan, gain[0], at, 1.5, 3.0, 0.0) is None
    assert refit_plan(plan, gain[1], at, 1.5, 3.0, 0.0) is None
    assert refit_plan(plan, gain[2], at, 1.5, 3.0, 0.0).max_iter == plan.max_iter + 2

def test_an_explicit_max_iter_wins_over_the_budget(caplog):
    cfg = load_config(["train.time_budget=5m", "train.max_iter=7"])
    with caplog.at_level(logging.WARNING, logger="test"):
        assert setup_budget(cfg, "cpu", None, logging.getLogger("test")) is None
    assert cfg.train.max_iter == 7 and "train.max_iter wins" in caplog.text
    # A schedule's max_iter (shapes: 1000) does not: the budget plans it, rescaling its steps.
    planned = load_config(["train.time_budget=5m"])
    assert planned.train.max_iter is None and planned.train.budget.schedule_max_iter == 1000
    state = setup_budget(planned, "cpu", None, logging.getLogger("test"))
    assert state.budget_s == 300 and planned.train.max_iter == state.plan_iteration == 30 + 10
    # schedule=auto without either: the CPU's default budget.
    auto = load_config(["schedule=auto", "dataset=coco128"])
    assert auto.train.max_iter is None and setup_budget(auto, "cpu", None, logging.getLogger("t")).budget_s == 600


def fixed_figures(monkeypatch, step_s=2.0, elapsed_s=40.0, eval_s=1.0):
    """The plan from fixed figures instead of this machine's timing, so two runs plan alike."""
    from detector.engine import time_budget

    real = time_budget.plan_budget

    def planned(budget_s, _elapsed, iteration, _step, _eval, *args, **kwargs):
        return real(budget_s, elapsed_s, iteration, step_s, eval_s, *args, **kwargs)

    monkeypatch.setattr(time_budget, "plan_budget", planned)
    real_revise = time_budget.revise_plan

    def revised(plan, _elapsed, iteration, _step, _eval, margin):
        # The same figures: the time spent by `iteration` at step_s per step and one evaluation.
        spent = elapsed_s + (iteration - plan.planned_at) * step_s + eval_s
        return real_revise(plan, spent, iteration, step_s, eval_s, margin)

    monkeypatch.setattr(time_budget, "revise_plan", revised)
    # Nor does this machine's wall clock: the process "starts" an hour from now, so the overrun
    # guard (tested with a fake clock above) never sees the real, load-dependent time of a test
    # whose budget is one minute while pytest has been running for longer.
    import time

    monkeypatch.setattr(time_budget, "process_start_time", lambda: time.time() + 3600)


def test_a_run_resumed_under_a_budget_ends_bit_identical(tmp_path, monkeypatch):
    from detector.engine.run import train
    from detector.engine.trainer import Trainer as LoopTrainer
    from detector.tasks.detection import DetectionTask

    fixed_figures(monkeypatch)
    shapes = tmp_path / "shapes"
    budget = ["train.time_budget=1m", "train.budget.timing_iters=2", "train.budget.margin=0.05",
              "train.amp=none", "test.analysis=off"]
    straight = tmp_path / "straight"
    train(load_config(tiny(shapes, straight, *budget)), DetectionTask())
    config = OmegaConf.load(straight / "config.yaml")
    plan = BudgetPlan.from_state(config.train.budget.plan)
    # 60 s less 5%, 40 s spent at iteration 4 (2 warm-up + 2 timed): 17 s, of which 2 periodic
    # evaluations and the final one take 3 s (1 s each), the rest 7 steps of 2 s. Revised at the
    # first evaluation after the plan (8) with the same figures: the same plan.
    assert (plan.planned_at, plan.max_iter, plan.eval_period, plan.checkpoint_period) == (4, 11, 4, 4)
    assert (plan.revised_at, plan.first_max_iter) == (8, 11)
    assert config.train.max_iter == plan.max_iter and config.train.eval_period == plan.eval_period
    final = torch.load(straight / "checkpoints" / "model_final.pth", weights_only=True)
    assert final["iteration"] == plan.max_iter and final["budget_plan"] == plan.state_dict()
    assert final["config"]["train"]["max_iter"] == plan.max_iter

    resumed = tmp_path / "resumed"
    run_step = LoopTrainer.run_step

    def crash_after_a_checkpoint(self):
        if self.iter == plan.revised_at + 1:   # no checkpoint before the revision (at 4: held back)
            raise RuntimeError("killed")
        run_step(self)

    monkeypatch.setattr(LoopTrainer, "run_step", crash_after_a_checkpoint)
    with pytest.raises(RuntimeError, match="killed"):
        train(load_config(tiny(shapes, resumed, *budget)), DetectionTask())
    last = torch.load(resumed / "checkpoints" / "last.pth", weights_only=True)
    assert last["iteration"] == plan.revised_at and last["budget_plan"] == plan.state_dict()
    monkeypatch.setattr(LoopTrainer, "run_step", run_step)
    monkeypatch.setattr("detector.engine.time_budget.plan_budget",
                        lambda *a, **k: pytest.fail("a resumed run plans again instead of keeping its plan"))
    monkeypatch.setattr("detector.engine.time_budget.revise_plan",
                        lambda *a, **k: pytest.fail("a resumed run revises its plan again"))
    train(load_config(tiny(shapes, resumed, *budget, "train.resume=true")), DetectionTask())
    again = torch.load(resumed / "checkpoints" / "model_final.pth", weights_only=True)
    assert again["iteration"] == plan.max_iter and again["budget_plan"] == plan.state_dict()
    different = [k for k in final["model"] if not torch.equal(final["model"][k], again["model"][k])]
    assert not different, different[:5]
