"""What every task's training run shares: the optimizer, schedule, AMP scaler, EMA and
checkpointer around a model, resuming from `last.pth`, and the Trainer with its standard
hooks, the task's hooks and the user's (train.hooks). Tasks (detector/tasks/) differ only in
their data, step function, evaluator and extra hooks (see engine/run.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf
import torch
from torch import nn

from detector.weights.checkpointer import FINAL, LAST, Checkpointer, load_latest_good, rng_state_for_this_rank
from detector.engine.best_checkpoint import BestCheckpointHook
from detector.engine.ema import ModelEMA
from detector.engine.history import JsonlWriter, MetricsHistory, eval_record
from detector.engine.context import seed_everything
from detector.engine.hooks import (EvalHook, LRSchedulerHook, PeriodicCheckpointer, PeriodicWriter, SkippedSamplesReport,
                                   build_hooks)
from detector.engine.devices import wrap_for_training
from detector.engine.precision import Precision, resolve_precision
from detector.engine.run_summary import command_line_overrides, write_run_summary
from detector.engine.trainer import Trainer
from detector.engine.writers import ConsoleWriter, TensorboardWriter
from detector.utils.distributed import broadcast_from_main, is_main_process


@dataclass
class TrainingRun:
    model: nn.Module          # possibly DDP-wrapped
    core: nn.Module           # the bare model
    optimizer: Any
    scheduler: Any
    scaler: Any
    ema: ModelEMA | None
    precision: Precision
    checkpointer: Checkpointer
    last: Path
    start_iter: int
    rng_state: Any
    checkpoint: dict | None   # the resumed checkpoint, if any
    budget: Any = None        # train.time_budget's state (engine/time_budget.py), None without a budget

    def eval_model(self) -> nn.Module:
        """The weights to evaluate: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.core


def find_resume_checkpoint(cfg: DictConfig, ctx) -> tuple[Path, dict] | None:
    """(path, checkpoint) a run continues from: with train.resume, output_dir/checkpoints/last.pth,
    or previous.pth when last.pth is damaged (with a warning naming it); None without train.resume
    or when neither exists. Decided, and the file read once, before the model is built: a resume
    needs none of its starting weights (the checkpoint replaces every weight, and its config
    records the settings they brought), so they are neither fetched nor converted nor read."""
    if not bool(cfg.train.resume):
        return None
    last = ctx.output_dir / "checkpoints" / LAST
    found = load_latest_good(last.parent, ctx.logger, tidy=is_main_process())
    if found is None:
        ctx.logger.info("train.resume=true but %s does not exist: starting from scratch.", last)
    return found


def prepare_training(cfg: DictConfig, ctx, model: nn.Module) -> TrainingRun:
    """Optimizer, schedule, scaler, EMA and checkpointer around `model`, restored from ctx.resume
    (find_resume_checkpoint, which engine/run.py's prepare called before building the model)."""
    from detector.solver import build_lr_scheduler, build_optimizer

    logger, device = ctx.logger, ctx.device
    last = ctx.output_dir / "checkpoints" / LAST
    found = ctx.resume
    from detector.engine.time_budget import setup_budget

    # Before the scheduler exists: it is built on the plan's max_iter (or the planning iteration).
    budget = setup_budget(cfg, device.type, found[1] if found is not None else None, logger)
    precision = resolve_precision(str(cfg.train.amp), device, logger)
    # SyncBatchNorm layers (a backbone with norm=sync_bn) need the CPU fallback of wrap_for_training.
    sync_bn = any(isinstance(module, nn.SyncBatchNorm) for module in model.modules())
    find_unused = bool(cfg.train.find_unused_parameters)
    if device.type == "cuda":
        # Let cuDNN time its algorithms per input shape (few shapes: sizes are multiples of 32).
        torch.backends.cudnn.benchmark = bool(cfg.train.cudnn_benchmark)
    if bool(cfg.train.compile):
        # In place (nn.Module.compile), so parameter names and checkpoints are unchanged.
        # The backbone is the static part; proposal selection and NMS stay eager.
        target = getattr(model, "backbone", model)
        target.compile(dynamic=True)
        logger.info("train.compile=true: %s compiled with torch.compile (the first steps are slow).",
                    type(target).__name__)
    static_graph = bool(cfg.train.ddp_static_graph) and not find_unused and int(cfg.train.grad_accum_steps) == 1
    model = wrap_for_training(model, device, sync_bn, find_unused, logger, static_graph=static_graph)
    core = model.module if hasattr(model, "module") else model
    optimizer = build_optimizer(cfg, core, ctx.world_size)
    scheduler = build_lr_scheduler(cfg, optimizer)
    if budget is not None:
        scheduler.decay_start = budget.plan_iteration
    scaler = precision.make_scaler()
    ema = ModelEMA(core, float(cfg.train.ema.decay), float(cfg.train.ema.ramp)) if cfg.train.ema.enabled else None
    checkpointer = Checkpointer(core, ctx.output_dir / "checkpoints", optimizer, scheduler, scaler, ema,
                                config=OmegaConf.to_container(cfg, resolve=True), save_to_disk=is_main_process(),
                                logger=logger)
    start_iter, rng_state, checkpoint = 0, None, None
    if found is not None:
        checkpoint = checkpointer.restore(found[1], found[0])
        start_iter = int(checkpoint["iteration"])
        rng_state = rng_state_for_this_rank(checkpoint, logger)
    else:
        # Same initial weights on every rank (built before); from here each rank draws its own numbers.
        seed_everything(int(cfg.seed) + ctx.rank)
    logger.info(
        "Model: %d parameters (%d trainable). Peak lr %.5g = solver.base_lr %.5g x total batch %d / %d.",
        sum(p.numel() for p in core.parameters()), sum(p.numel() for p in core.parameters() if p.requires_grad),
        scheduler.base_lrs[0], cfg.solver.base_lr,
        cfg.dataloader.batch_size * ctx.world_size * cfg.train.grad_accum_steps, cfg.solver.reference_batch_size,
    )
    return TrainingRun(model, core, optimizer, scheduler, scaler, ema, precision, checkpointer, last,
                       start_iter, rng_state, checkpoint, budget)


def run_training(cfg: DictConfig, ctx, run: TrainingRun, train_loader, step_fn, evaluator,
                 extra_hooks: Sequence = (), start_images: Sequence = ()) -> dict[str, Any]:
    """Train with the standard hooks, evaluating periodically and at the end; returns the metrics.

    `extra_hooks` (the task's, e.g. the validation loss) and then the user's hooks
    (train.hooks, built by hooks.build_hooks) run after evaluation and before the writers,
    so what they store reaches TensorBoard and metrics.jsonl at the iteration it belongs to,
    and they can read that iteration's evaluation (trainer.storage). `start_images`
    ((tag, picture) pairs, e.g. the label statistics) go to TensorBoard at the first write.

    The hook order matters: LR schedule, evaluation, then the best-checkpoint decision
    (which may stop the run), the skipped-samples report, the task's and the user's hooks,
    then the writers (console, TensorBoard, metrics.jsonl), and the checkpoint last, so that
    a checkpoint at iteration N holds the best/early-stopping state after N's evaluation and
    everything of N is already written when it appears."""
    logger = ctx.logger
    max_iter = int(cfg.train.max_iter)
    trainer = Trainer(
        run.model, run.optimizer, train_loader, max_iter, step_fn=step_fn,
        start_iter=run.start_iter, grad_accum_steps=int(cfg.train.grad_accum_steps),
        clip_grad_norm=float(cfg.train.clip_grad_norm), precision=run.precision, scaler=run.scaler,
        ema=run.ema, device=ctx.device, logger=logger,
    )
    trainer.pending_rng_state = run.rng_state
    if run.checkpoint is not None and "events" in run.checkpoint:
        trainer.storage.load_state_dict(run.checkpoint["events"])  # smoothed logs continue seamlessly
    eval_hook = EvalHook(int(cfg.train.eval_period), evaluator)
    best = BestCheckpointHook(eval_hook, run.checkpointer, str(cfg.train.best_metric), str(cfg.train.best_mode),
                              int(cfg.train.early_stop_patience), logger)
    if run.checkpoint is not None and "best" in run.checkpoint:
        best.load_state_dict(run.checkpoint["best"])
    finished = run.start_iter >= max_iter or best.stopped_at is not None
    history = MetricsHistory(ctx.output_dir) if is_main_process() else None
    if history is not None:
        dropped = history.start(run.start_iter)
        if dropped and run.start_iter:
            logger.info("metrics.jsonl: dropped %d line(s) past iteration %d, which this run trains again.",
                        dropped, run.start_iter)
    images_per_iteration = int(cfg.dataloader.batch_size) * ctx.world_size * int(cfg.train.grad_accum_steps)
    summary = dict(overrides=command_line_overrides(), images_per_iteration=images_per_iteration, max_iter=max_iter)
    start = time.perf_counter()
    if finished:
        return _finish_only(cfg, run, trainer, evaluator, best, history, logger, summary, start)
    writers = []
    if history is not None:
        tensorboard = TensorboardWriter(ctx.output_dir / "tb")
        for tag, picture in start_images:
            tensorboard.writer.add_image(tag, picture, run.start_iter, dataformats="HWC")
        writers = [ConsoleWriter(max_iter, logger), tensorboard, JsonlWriter(history)]
    checkpoint_hook = PeriodicCheckpointer(run.checkpointer, int(cfg.train.checkpoint_period),
                                           extra_state=lambda: {"best": best.state_dict(), **_budget_state(run)})
    budget_hook = _budget_hook(cfg, ctx, run, trainer, evaluator, eval_hook, best, checkpoint_hook, writers, summary)
    trainer.register_hooks([
        budget_hook,  # first: the other hooks of the planning iteration see the planned max_iter
        LRSchedulerHook(run.optimizer, run.scheduler),
        eval_hook,
        best,
        SkippedSamplesReport(logger),
        *extra_hooks,
        *build_hooks(cfg.train.hooks),
        PeriodicWriter(writers, int(cfg.train.log_period)),
        # After the evaluation it times, before the checkpoint that records the revised plan.
        budget_hook.revision_hook() if budget_hook is not None else None,
        checkpoint_hook,
    ])
    trainer.train()
    finish_evaluation(evaluator, eval_hook.last_iteration)
    logger.info("Training and evaluation took %.1f min. Outputs are in %s.", (time.perf_counter() - start) / 60,
                ctx.output_dir)
    if history is not None:
        path = write_run_summary(ctx.output_dir, history.records(), best=best.state_dict(),
                                 wall_time_s=time.perf_counter() - start, **summary,
                                 stop_reason=None if trainer.stop_reason is None else
                                 f"stopped at iteration {trainer.iter}: {trainer.stop_reason}")
        logger.info("Run summary: %s", path)
    return evaluator.metrics


def _finish_only(cfg, run: TrainingRun, trainer: Trainer, evaluator, best: BestCheckpointHook, history, logger,
                 summary: dict, start: float) -> dict[str, Any]:
    """Nothing left to train (last.pth is at max_iter, or the run stopped early): make sure
    model_final.pth exists, evaluate it again (metrics.json, pictures) and write the summary."""
    if best.stopped_at is not None:
        logger.info("%s stopped early at iteration %d (train.early_stop_patience=%d): nothing left to train; "
                    "evaluating only.", run.last, best.stopped_at, best.patience)
    else:
        logger.info("%s is already at train.max_iter=%d: evaluating only.", run.last, cfg.train.max_iter)
    # Stopped after the last checkpoint but before model_final.pth was complete? Rank 0
    # decides for all: saving is a collective.
    if broadcast_from_main(not (run.last.parent / FINAL).is_file()):
        if run.rng_state is not None:
            from detector.utils.rng_state import restore_rng_state

            restore_rng_state(run.rng_state)
        run.checkpointer.save(FINAL, run.start_iter, final=True,
                              extra={"events": trainer.storage.state_dict(), "best": best.state_dict()})
    scalars, _ = evaluator(run.start_iter)
    finish_evaluation(evaluator, run.start_iter)
    if history is not None:
        # The same evaluation as the one recorded before the interruption: replace it.
        history.keep_only(lambda r: not (int(r["iteration"]) == run.start_iter and r.get("type") == "eval"))
        history.append([eval_record(run.start_iter, scalars)])
        stop = None if best.stopped_at is None else f"stopped early at iteration {best.stopped_at}"
        write_run_summary(run.last.parent.parent, history.records(), best=best.state_dict(),
                          wall_time_s=time.perf_counter() - start, stop_reason=stop, **summary)
    return evaluator.metrics


def _budget_state(run: TrainingRun) -> dict:
    """What a checkpoint carries of train.time_budget: the plan, once fixed."""
    plan = run.budget.plan if run.budget is not None else None
    return {} if plan is None else {"budget_plan": plan.state_dict()}


def _budget_hook(cfg: DictConfig, ctx, run: TrainingRun, trainer: Trainer, evaluator, eval_hook: EvalHook,
                 best: BestCheckpointHook, checkpoint_hook: PeriodicCheckpointer, writers: Sequence, summary: dict):
    """The hook that times the first iterations after warm-up and fixes the plan (None when
    train.max_iter decides, or the plan is already fixed: resumed). Until the plan, no periodic
    evaluation, checkpoint or early stop: nothing may depend on the length of the run."""
    from detector.engine import time_budget
    from detector.engine.time_budget import TimeBudgetHook, apply_plan_to_config, estimate_eval_s, process_start_time

    budget = run.budget
    if budget is not None and budget.plan is not None:   # resumed: the checkpoint's plan
        eval_hook.last_periodic = budget.plan.last_periodic_eval
    if budget is None or budget.plan is not None:
        return None
    eval_hook.period, checkpoint_hook.period, best.patience = 0, 0, 0
    settings = cfg.train.budget
    images_per_step = int(cfg.dataloader.batch_size) * int(cfg.train.grad_accum_steps)
    user_patience = int(cfg.train.early_stop_patience)

    def make_plan(step_s: float, elapsed_s: float, iteration: int):
        loader = getattr(evaluator, "loader", None)  # a task's evaluator may have none: a fixed estimate
        test_images = len(loader) * int(cfg.dataloader.test_batch_size) if loader is not None else None
        eval_s = estimate_eval_s(test_images, step_s, images_per_step, float(settings.eval_cost),
                                 float(settings.eval_fixed_s))
        return time_budget.plan_budget(budget.budget_s, elapsed_s, iteration, step_s, eval_s, int(settings.evaluations),
                           float(settings.max_eval_share), float(settings.margin), budget.schedule_steps,
                           budget.schedule_max_iter, user_patience)

    def apply_plan(plan) -> None:
        budget.plan = plan
        trainer.max_iter = run.scheduler.max_iter = summary["max_iter"] = plan.max_iter
        run.scheduler.steps = list(plan.lr_steps)
        eval_hook.period, checkpoint_hook.period, best.patience = (plan.eval_period, plan.checkpoint_period,
                                                                   plan.early_stop_patience)
        eval_hook.last_periodic = plan.last_periodic_eval
        if plan.checkpoints_held_back:
            checkpoint_hook.period = 0
        for writer in writers:
            if isinstance(writer, ConsoleWriter):
                writer.max_iter = plan.max_iter
        apply_plan_to_config(cfg, plan)
        run.checkpointer.config = OmegaConf.to_container(cfg, resolve=True)
        if is_main_process():
            OmegaConf.save(cfg, ctx.output_dir / "config.yaml", resolve=True)
        ctx.logger.info("train.time_budget plan: %s.", plan.describe_refit() if plan.refitted_at
                        else plan.describe_revision() if plan.revised_at else plan.describe())

    def revise(plan, elapsed_s: float, iteration: int, step_s: float, eval_s: float):
        return time_budget.revise_plan(plan, elapsed_s, iteration, step_s, eval_s, float(settings.margin))

    def refit(plan, elapsed_s: float, iteration: int, step_s: float, eval_s: float):
        return time_budget.refit_plan(plan, elapsed_s, iteration, step_s, eval_s, float(settings.margin))

    return TimeBudgetHook(budget.timing_from, budget.timing_iters, process_start_time(), make_plan, apply_plan,
                          revise=revise, reserve_s=float(settings.margin) * budget.budget_s, refit=refit)


def finish_evaluation(evaluator, iteration: int | None) -> None:
    """The evaluator's finish(iteration) after training; an evaluator written before that method
    existed (a user's task) has none, and nothing is left for it to do."""
    finish = getattr(evaluator, "finish", None)
    if finish is not None:
        finish(iteration)


def log_evaluation(output_dir: Path, iteration: int | None, scalars: dict, images: list) -> None:
    """eval_only runs: write one evaluation's scalars and pictures to output_dir/tb (rank 0 only)."""
    if not is_main_process():
        return
    writer = TensorboardWriter(output_dir / "tb")
    step = int(iteration or 0)
    for name, value in scalars.items():
        if value is not None:  # undefined COCO numbers (no object of that size)
            writer.writer.add_scalar(name, value, step)
    for tag, picture in images:
        writer.writer.add_image(tag, picture, step, dataformats="HWC")
    writer.close()
