"""train.time_budget: a wall-clock budget turned into a plan of iterations.

The budget counts from the start of the process to the end of the final evaluation. The run
trains its warm-up, times `budget.timing_iters` more iterations, then fixes the plan once
(plan_budget, a pure function of the measured figures): max_iter so that the training left,
the periodic evaluations and the final one end within the budget, the evaluation and
checkpoint periods, the multistep LR steps, early stopping. Until then the learning rate is
the warm-up's and then the peak (the cosine decays from the planned iteration on), and no
checkpoint is written, so nothing depends on a max_iter not yet known. The plan goes into
config.yaml (train.*) and every checkpoint (`budget_plan`); a resumed run reads it back
instead of timing again, so it stays bit-identical to an uninterrupted one. Under torchrun
rank 0's plan is broadcast.

The first plan rests on a few timed steps and an estimated evaluation. It is revised once, at
the first periodic evaluation (or half-way, without one), from what the run has measured by
then: the step time since the plan and that evaluation's time (revise_plan). Nothing is
checkpointed between the two, so every checkpoint holds the revised plan and a resume from
any of them still matches the uninterrupted run.

The steps then drift (a CPU's by 10-30 % over a run, with the machine's load or as the detector
learns), so each later periodic evaluation refits the plan to the step time measured since the
revision (refit_plan): max_iter is shortened to what still fits, so that the LR schedule still
ends (a cosine that stops part-way loses AP), or lengthened when at least 2 % more iterations
fit, so that the budget is used. The checkpoint written after that evaluation records it. Only
if the machine slows between evaluations does the run end before its max_iter
(_end_within_budget). A run resumed from a checkpoint before a refit or such an end may differ
from the uninterrupted one, which could not keep to its first plan either.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping

from detector.engine.trainer import HookBase
from detector.utils.durations import (TimeBudgetError, configured_budget_s,  # noqa: F401 (re-exported)
                                      parse_time_budget)

_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """When this process started (Unix time): Linux /proc, else when this module was imported."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = float(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as system:
            boot = next(float(line.split()[1]) for line in system if line.startswith("btime"))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


@dataclass
class BudgetPlan:
    """The plan fixed at `planned_at` (an iteration), what it was made from and what it sets."""
    budget_s: float
    planned_at: int
    elapsed_s: float          # since the start of the process, when planned
    step_s: float             # measured per iteration
    eval_s: float             # estimated per evaluation
    max_iter: int
    eval_period: int          # 0: only the final evaluation
    checkpoint_period: int
    early_stop_patience: int
    lr_steps: list[int] = field(default_factory=list)
    # Set by revise_plan: the iteration of the revision (0: not revised yet), the time spent by
    # then and the first plan's max_iter. step_s and eval_s are then the measured figures.
    revised_at: int = 0
    revised_elapsed_s: float = 0.0
    first_max_iter: int = 0
    # The last periodic evaluation (0: every multiple of eval_period before max_iter): the
    # revision skips one that would fall within half a period of the final evaluation.
    last_periodic_eval: int = 0
    # Set by refit_plan: the iteration of the last refit (0: none) and the max_iter before it.
    refitted_at: int = 0
    max_iter_before_refit: int = 0

    @property
    def revision_iteration(self) -> int:
        """Where the plan is revised: the first periodic evaluation after the plan, else half-way.
        Until then the run writes no periodic checkpoint (the training run holds them back)."""
        if self.eval_period:
            return (self.planned_at // self.eval_period + 1) * self.eval_period
        return self.planned_at + (self.max_iter - self.planned_at) // 2

    @property
    def checkpoints_held_back(self) -> bool:
        """No periodic checkpoint before the revision: one would record the first plan, and a run
        resumed from it could not follow the uninterrupted run's revision."""
        return not self.revised_at and self.revision_iteration < self.max_iter

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "BudgetPlan":
        # Plans recorded before the revision existed lack its fields: their defaults (not revised).
        return cls(**{key: state[key] for key in cls.__dataclass_fields__ if key in state})

    def describe(self) -> str:
        evals = (self.max_iter - 1) // self.eval_period if self.eval_period else 0
        return (f"budget {self.budget_s / 60:.1f} min, {self.elapsed_s:.0f} s spent at iteration {self.planned_at}; "
                f"{self.step_s:.3f} s per iteration, about {self.eval_s:.0f} s per evaluation -> train.max_iter="
                f"{self.max_iter}, {evals} periodic evaluation(s) (train.eval_period={self.eval_period}) and the final "
                f"one, train.checkpoint_period={self.checkpoint_period}, train.early_stop_patience="
                f"{self.early_stop_patience}" + (f", solver.steps={self.lr_steps}" if self.lr_steps else ""))

    def describe_revision(self) -> str:
        return (f"revised at iteration {self.revised_at}, {self.revised_elapsed_s:.0f} s spent of "
                f"{self.budget_s / 60:.1f} min: measured {self.step_s:.3f} s per iteration since iteration "
                f"{self.planned_at} and {self.eval_s:.1f} s for "
                + ("the evaluation" if self.eval_period else "an evaluation (estimated, none ran yet)")
                + f" -> train.max_iter {self.first_max_iter} -> {self.max_iter}"
                + (f", no periodic evaluation after iteration {self.last_periodic_eval} (it would fall within half "
                   "a period of the final one)" if self.last_periodic_eval else "")
                + (f", solver.steps={self.lr_steps}" if self.lr_steps else ""))

    def describe_refit(self) -> str:
        change = "shortened" if self.max_iter < self.max_iter_before_refit else "lengthened"
        return (f"{change} at iteration {self.refitted_at}: since iteration {self.revised_at} the steps took "
                f"{self.step_s:.3f} s, the evaluation {self.eval_s:.1f} s -> train.max_iter "
                f"{self.max_iter_before_refit} -> {self.max_iter}, where the LR schedule now ends")


def plan_budget(budget_s: float, elapsed_s: float, iteration: int, step_s: float, eval_s: float,
                evaluations: int, max_eval_share: float, margin: float, schedule_steps=(),
                schedule_max_iter: int | None = None, early_stop_patience: int = 0) -> BudgetPlan:
    """The plan: after `elapsed_s` of `budget_s` (less `margin` of it), `iteration` done at
    `step_s` each, the iterations that fit with the evaluations. Periodic evaluations (up to
    `evaluations`) take at most `max_eval_share` of the time left; the final one always fits
    first. `schedule_steps` (multistep LR steps of a schedule of `schedule_max_iter`
    iterations) keep their fractions of the run. Early stopping: the user's patience, else
    half of the evaluations when there are at least 3 periodic ones."""
    left = budget_s * (1.0 - margin) - elapsed_s
    evals = 0
    if eval_s > 0:
        evals = int(min(evaluations, max(0.0, max_eval_share * (left - eval_s)) // eval_s))
    train_s = left - (evals + 1) * eval_s
    more = max(0, int(train_s // max(step_s, 1e-9)))
    max_iter = iteration + more
    eval_period = int(math.ceil(max_iter / (evals + 1))) if evals and more else 0
    checkpoint_period = eval_period or max_iter
    patience = int(early_stop_patience) or ((evals + 1 + 1) // 2 if evals >= 3 else 0)
    steps = []
    if schedule_steps and schedule_max_iter:
        steps = sorted({min(max_iter, max(iteration + 1, round(s / schedule_max_iter * max_iter)))
                        for s in schedule_steps})
    return BudgetPlan(float(budget_s), int(iteration), float(elapsed_s), float(step_s), float(eval_s), int(max_iter),
                      eval_period, int(checkpoint_period), patience, steps)


def revise_plan(plan: BudgetPlan, elapsed_s: float, iteration: int, step_s: float, eval_s: float,
                margin: float) -> BudgetPlan:
    """The plan once `iteration` is done after `elapsed_s`, from the measured `step_s` and
    `eval_s`: the largest max_iter whose remaining steps, periodic evaluations (every
    eval_period, unchanged) and final evaluation end within the budget less `margin`. Not
    below `iteration` (ending now: that evaluation is the last). Multistep LR steps still ahead
    keep their fraction of the run; the cosine's start (planned_at) stays."""
    left = plan.budget_s * (1.0 - margin) - elapsed_s
    period = plan.eval_period

    def periodic_evaluations(max_iter: int, last: int) -> int:
        if not period:
            return 0
        return max(0, min(max_iter - 1, last) // period - iteration // period)

    def longest(last: int) -> int:
        max_iter = iteration + max(0, int((left - eval_s) // max(step_s, 1e-9)))
        while max_iter > iteration and (max_iter - iteration) * step_s + (
                periodic_evaluations(max_iter, last) + 1) * eval_s > left:
            max_iter -= 1
        return max_iter

    last_periodic = 0
    max_iter = longest(last=1 << 62)
    final_periodic = (max_iter - 1) // period * period if period else 0
    if final_periodic > iteration and max_iter - final_periodic < period / 2:
        # Evaluating twice within half a period tells little: that periodic evaluation is
        # skipped and its time trained instead.
        last_periodic = max(iteration, final_periodic - period)
        max_iter = longest(last_periodic)
    steps = sorted({s if s <= iteration else min(max_iter, max(iteration + 1, round(s * max_iter / plan.max_iter)))
                    for s in plan.lr_steps})
    return replace(plan, max_iter=int(max_iter), step_s=float(step_s), eval_s=float(eval_s), lr_steps=steps,
                   checkpoint_period=period or int(max_iter), revised_at=int(iteration),
                   revised_elapsed_s=float(elapsed_s), first_max_iter=plan.max_iter,
                   last_periodic_eval=int(last_periodic))


def refit_plan(plan: BudgetPlan, elapsed_s: float, iteration: int, step_s: float, eval_s: float,
               margin: float, min_gain: float = 0.02) -> BudgetPlan | None:
    """The revised plan refitted after `iteration` (`elapsed_s` spent) to the step and evaluation
    times measured since the revision: max_iter cut to what fits when the rest no longer does,
    or raised when at least `min_gain` (a fraction of max_iter) more iterations fit -- a smaller
    gain is not worth moving the LR schedule. None: the plan stands."""
    fitted = revise_plan(plan, elapsed_s, iteration, step_s, eval_s, margin)
    if plan.max_iter <= fitted.max_iter < plan.max_iter * (1.0 + min_gain):
        return None
    return replace(fitted, revised_at=plan.revised_at, revised_elapsed_s=plan.revised_elapsed_s,
                   first_max_iter=plan.first_max_iter, refitted_at=int(iteration),
                   max_iter_before_refit=int(plan.max_iter))


def estimate_eval_s(images_per_rank: int | None, step_s: float, images_per_step: int, eval_cost: float,
                    eval_fixed_s: float) -> float:
    """One evaluation: per test image, `eval_cost` of a training step's time per image, plus a fixed part."""
    if not images_per_rank:
        return float(eval_fixed_s)
    return float(eval_fixed_s) + images_per_rank * step_s / max(1, images_per_step) * float(eval_cost)


class TimeBudgetHook(HookBase):
    """Times `timing_iters` iterations after iteration `timing_from` (the end of warm-up), then
    calls `make_plan(step_s, elapsed_s, iteration)` on rank 0, shares it and hands it to
    `apply_plan` -- before the other hooks of that iteration run (register it first), so they
    already see the planned max_iter. At the plan's revision_iteration, `revision_hook()`
    (registered after the evaluation and before the checkpointer) calls
    `revise(plan, elapsed_s, iteration, step_s, eval_s)` with the step time measured since the
    plan and the evaluation's time, and hands the result to `apply_plan` too; at each later
    periodic evaluation it calls `refit(plan, ...)` with the figures measured since the
    revision (module docstring). `clock` (seconds, monotonic) and `now` (Unix time) are
    replaceable for tests."""

    def __init__(self, timing_from: int, timing_iters: int, started_at: float,
                 make_plan: Callable[[float, float, int], BudgetPlan], apply_plan: Callable[[BudgetPlan], None],
                 clock: Callable[[], float] = time.perf_counter, now: Callable[[], float] = time.time,
                 revise: Callable[[BudgetPlan, float, int, float, float], BudgetPlan] | None = None,
                 reserve_s: float = 0.0,
                 refit: Callable[[BudgetPlan, float, int, float, float], BudgetPlan | None] | None = None):
        self.timing_from = int(timing_from)
        self.timing_iters = max(1, int(timing_iters))
        self.started_at = float(started_at)
        self.make_plan, self.apply_plan, self.revise, self.refit = make_plan, apply_plan, revise, refit
        self.reserve_s = float(reserve_s)   # the budget's margin, kept after the final evaluation
        self.clock, self.now = clock, now
        self._timing_start: float | None = None
        self._step_times: list[float] = []
        self._planned_clock: float | None = None     # clock() when the plan was made
        self._before_revision: float | None = None   # clock() at the revision iteration, before its evaluation
        # Since the revision: the training steps' time and count (evaluations left out); the
        # last evaluation's iteration and clock() after it; clock() before the current one.
        self._steps_s, self._steps = 0.0, 0
        self._last_eval, self._after_eval, self._before_eval = 0, None, None
        self.plan: BudgetPlan | None = None

    @property
    def plan_iteration(self) -> int:
        return self.timing_from + self.timing_iters

    def before_train(self) -> None:
        if self.trainer.start_iter == self.timing_from:
            self._timing_start = self.clock()

    def after_step(self) -> None:
        if self.plan is not None:
            if self._revision_due():
                self._before_revision = self.clock()
            elif self._check_due():
                self._before_eval = self.clock()
            self._end_within_budget()
            return
        done = self.trainer.iter + 1
        if done == self.timing_from:
            self._timing_start = self.clock()
        elif self.timing_from < done <= self.plan_iteration and self._timing_start is not None:
            now = self.clock()
            self._step_times.append(now - self._timing_start)
            self._timing_start = now
        if done == self.plan_iteration:
            from detector.utils.distributed import broadcast_from_main, is_main_process

            plan = None
            if is_main_process():
                # The median step: a few iterations slowed by another process (a test run, an
                # indexer) must not cut the whole plan short; _end_within_budget guards the rest.
                step_s = float(statistics.median(self._step_times))
                plan = self.make_plan(step_s, self.now() - self.started_at, done)
            self._planned_clock = self.clock()
            self.plan = broadcast_from_main(plan)
            self.apply_plan(self.plan)

    def _revision_due(self) -> bool:
        return (self.revise is not None and self.plan is not None and not self.plan.revised_at
                and self._planned_clock is not None and self.trainer.iter + 1 == self.plan.revision_iteration
                and self.plan.revision_iteration < self.trainer.max_iter)

    def revision_hook(self) -> HookBase:
        """The hook that revises the plan once the revision iteration's evaluation is done."""
        return _PlanRevision(self)

    def _check_due(self) -> bool:
        """A periodic evaluation after the revision, where refit() checks the plan."""
        plan, done = self.plan, self.trainer.iter + 1
        return (self.refit is not None and plan is not None and bool(plan.revised_at)
                and self._after_eval is not None and bool(plan.eval_period) and done % plan.eval_period == 0
                and done < self.trainer.max_iter and (not plan.last_periodic_eval or done <= plan.last_periodic_eval))

    def revise_now(self) -> None:
        """After this iteration's evaluation: the revision when due, else the check of a revised
        plan at a periodic evaluation."""
        if self._revision_due() and self._before_revision is not None:
            self._revise()
        elif self._before_eval is not None and self._check_due():
            self._refit()
        else:
            return
        self._last_eval, self._after_eval, self._before_eval = self.trainer.iter + 1, self.clock(), None

    def _revise(self) -> None:
        from detector.utils.distributed import broadcast_from_main, is_main_process

        done = self.trainer.iter + 1
        plan = None
        if is_main_process():
            evaluated = self.plan.eval_period and done % self.plan.eval_period == 0
            eval_s = self.clock() - self._before_revision if evaluated else self.plan.eval_s
            step_s = (self._before_revision - self._planned_clock) / max(1, done - self.plan.planned_at)
            plan = self.revise(self.plan, self.now() - self.started_at, done, step_s, eval_s)
        self.plan = broadcast_from_main(plan)
        self.apply_plan(self.plan)

    def _refit(self) -> None:
        from detector.utils.distributed import broadcast_from_main, is_main_process

        done = self.trainer.iter + 1
        self._steps_s += self._before_eval - self._after_eval
        self._steps += done - self._last_eval
        refitted = None
        if is_main_process():
            eval_s = self.clock() - self._before_eval
            refitted = self.refit(self.plan, self.now() - self.started_at, done, self._steps_s / self._steps, eval_s)
        refitted = broadcast_from_main(refitted)
        if refitted is not None:
            self.plan = refitted
            self.apply_plan(refitted)


    def _end_within_budget(self) -> None:
        """The plan holds while the machine keeps the speed it was timed at. When it slows (another
        process took the cores, a laptop throttled), the run ends at the first iteration after
        which only the final evaluation and half the margin (for what follows it: pictures, the
        summary) still fit, so the budget is kept: an overrun is the one case where a run ends
        before the planned max_iter (a resumed run then differs from an uninterrupted one, which
        kept no time either). Rank 0 decides for every rank."""
        done = self.trainer.iter + 1
        if done >= self.trainer.max_iter:
            return
        from detector.utils.distributed import broadcast_from_main, is_main_process

        left = self.plan.budget_s - (self.now() - self.started_at) if is_main_process() else None
        over = bool(broadcast_from_main(left is not None
                                        and left < self.plan.eval_s + self.plan.step_s + self.reserve_s / 2))
        if over:
            self.trainer.logger.warning(
                "train.time_budget: %.0f s of the %.1f min budget are left at iteration %d, about one final "
                "evaluation (%.0f s): the machine is slower than when the plan was made (%.3f s per iteration), "
                "so training ends here instead of at iteration %d.", max(0.0, left or 0.0), self.plan.budget_s / 60,
                done, self.plan.eval_s, self.plan.step_s, self.trainer.max_iter)
            self.trainer.max_iter = done


class _PlanRevision(HookBase):
    """Registered after the evaluation and before the checkpointer: the revised plan is the one
    the revision iteration's checkpoint records."""

    def __init__(self, budget_hook: TimeBudgetHook):
        self.budget_hook = budget_hook

    def after_step(self) -> None:
        self.budget_hook.revise_now()


@dataclass
class BudgetState:
    """A run under train.time_budget: its plan once fixed (read back from a checkpoint on
    resume), else what the timing needs."""
    budget_s: float
    timing_from: int           # the end of warm-up
    timing_iters: int
    schedule_steps: list[int]  # the schedule's multistep LR steps, rescaled by the plan
    schedule_max_iter: int | None
    plan: BudgetPlan | None = None

    @property
    def plan_iteration(self) -> int:
        return self.plan.planned_at if self.plan is not None else self.timing_from + self.timing_iters


def setup_budget(cfg, device_type: str, checkpoint: Mapping | None, logger) -> BudgetState | None:
    """None when train.max_iter decides the length (no budget, or a max_iter given on the command
    line, which wins: then a warning when a budget was given too). Otherwise the budget's state;
    cfg is set for the run until the plan: train.max_iter = the planning iteration, no LR steps
    (or, resuming, the plan the checkpoint holds: apply_plan_to_config)."""
    budget = cfg.train.budget
    budget_s = configured_budget_s(cfg.train, device_type)
    if budget_s is None:
        return None
    if cfg.train.max_iter is not None:
        if str(cfg.train.time_budget).strip().lower() != "auto":
            logger.warning("train.max_iter=%s and train.time_budget=%s are both given: train.max_iter wins, "
                           "the budget is ignored.", cfg.train.max_iter, cfg.train.time_budget)
        return None
    state = BudgetState(budget_s, int(cfg.solver.warmup_iters), int(budget.timing_iters),
                        [int(s) for s in cfg.solver.steps], budget.schedule_max_iter)
    if checkpoint is not None and checkpoint.get("budget_plan") is not None:
        state.plan = BudgetPlan.from_state(checkpoint["budget_plan"])
        apply_plan_to_config(cfg, state.plan)
        logger.info("train.time_budget: the plan of the checkpoint is kept: %s.", state.plan.describe())
        return state
    cfg.train.max_iter = state.plan_iteration
    cfg.solver.steps = []
    logger.info("train.time_budget=%s (%.1f min from the start of the process): timing iterations %d to %d, "
                "then planning train.max_iter.", cfg.train.time_budget, budget_s / 60, state.timing_from,
                state.plan_iteration)
    return state


def apply_plan_to_config(cfg, plan: BudgetPlan) -> None:
    """The plan's values in the run's config (what config.yaml and the checkpoints record)."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.train.max_iter = plan.max_iter
        cfg.train.eval_period = plan.eval_period
        cfg.train.checkpoint_period = plan.checkpoint_period
        cfg.train.early_stop_patience = plan.early_stop_patience
        cfg.solver.steps = list(plan.lr_steps)
        cfg.train.budget.plan = plan.state_dict()
