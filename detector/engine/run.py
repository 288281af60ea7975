"""The run skeleton, the same for every task: train (or resume) and evaluate, or evaluate a
checkpoint. A Task (detector/engine/task.py) supplies the model, data, step, evaluator, its
validation batches, checkpoint extras and extra hooks; this module never imports a task --
the commands pick one (detector/cli/, started by detector/engine/launch.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from detector.engine.context import RunContext, open_run_context, seed_everything
from detector.engine.precision import resolve_precision
from detector.engine.task import Task
from detector.engine.training_run import log_evaluation, prepare_training, run_training
from detector.engine.validation import build_validation_hook
from detector.utils.distributed import barrier, is_main_process


def resolve_classes(cfg: DictConfig, task: Task, ctx: RunContext | None = None) -> list[str]:
    """The task fills model.class_names from its data, rank 0 first: reading the classes may
    write the data (the generated shapes), which two processes must not do at once."""
    names = task.resolve_classes(cfg, ctx) if is_main_process() else None
    barrier()
    if names is None:
        names = task.resolve_classes(cfg, ctx)
    return names


def read_starting_weights(cfg: DictConfig, ctx: RunContext) -> None:
    """The checkpoint to resume from (ctx.resume), else the starting weights cfg names, resolved
    and read once (ctx.starting_weights; rank 0 first, as a published name may be fetched and
    converted: detector/weights/starting_weights.py). A resume reads no starting weights."""
    from detector.engine.training_run import find_resume_checkpoint
    from detector.weights.starting_weights import starting_weights_for_run

    ctx.resume = find_resume_checkpoint(cfg, ctx)
    ctx.starting_weights = starting_weights_for_run(cfg, ctx.resume)


def adopt_weight_settings(cfg: DictConfig, ctx: RunContext) -> None:
    """The input settings the starting weights were made with, into cfg (see
    detector/weights/weight_settings.py), from ctx.starting_weights (a resume's: the settings
    its checkpoint's config records)."""
    from detector.weights.weight_settings import adopt_settings

    adopt_settings(cfg, ctx.starting_weights, ctx.logger)


def apply_auto_settings(cfg: DictConfig, ctx: RunContext) -> None:
    """What the run decides itself, before the model is built: train.max_iter left to
    train.time_budget unless the command line gave it, and under schedule=auto the recipe's
    choices from the training split (detector/recipe/), logged with their figures. Every
    rank computes the same values from the same data (after resolve_classes wrote it)."""
    from detector.engine.run_summary import command_line_overrides
    from detector.recipe.apply import apply_recipe, keep_recorded_choices, mark_auto_keys
    from detector.weights.checkpoint_io import CheckpointRecord
    from detector.weights.starting_weights import stored_config

    overrides = command_line_overrides()  # None outside Hydra: load_config already marked the keys
    if overrides is not None:
        mark_auto_keys(cfg, overrides)
    applied = apply_recipe(cfg, ctx.logger)
    if ctx.resume is not None and applied:
        path, checkpoint = ctx.resume
        keep_recorded_choices(cfg, applied, stored_config(CheckpointRecord(Path(path), dict(checkpoint))), ctx.logger)


def write_run_config(cfg: DictConfig, ctx: RunContext) -> None:
    """output_dir/config.yaml: the run's configuration, fully resolved (rank 0 writes)."""
    if is_main_process():
        OmegaConf.save(cfg, ctx.output_dir / "config.yaml", resolve=True)
    barrier()


def prepare(cfg: DictConfig, task: Task, ctx: RunContext | None = None) -> tuple[RunContext, nn.Module]:
    """Context, classes, the checkpoint to resume from or the starting weights (read once), their
    input settings, config.yaml and the task's model with its initial weights (loaded from
    ctx.starting_weights; none on a resume, whose checkpoint replaces them), identically
    initialised on every rank (same seed before building)."""
    from detector.weights.loading import load_starting_weights

    ctx = ctx or open_run_context(cfg)
    resolve_classes(cfg, task, ctx)
    read_starting_weights(cfg, ctx)
    adopt_weight_settings(cfg, ctx)
    apply_auto_settings(cfg, ctx)
    write_run_config(cfg, ctx)
    seed_everything(int(cfg.seed))
    model = task.build_model(cfg, ctx)
    load_starting_weights(model, cfg, ctx.starting_weights, ctx.logger)
    return ctx, model


def train(cfg: DictConfig, task: Task, ctx: RunContext | None = None) -> dict[str, Any]:
    """Train (or resume from output_dir/checkpoints/last.pth), evaluating every
    train.eval_period iterations and at the end; returns the last evaluation's metrics.
    `ctx`: the run's context when the caller opened it (the launch), else opened here.

    The task's methods are called in this order: resolve_classes, build_model,
    restore_checkpoint_extras (on resume), build_train_loader, checkpoint_extras,
    start_training, build_evaluator, build_step, validation_period, extra_hooks, and
    build_validation_loader when the first validation runs."""
    ctx, model = prepare(cfg, task, ctx)  # initial weights here; a resume replaces them
    run = prepare_training(cfg, ctx, model)
    if run.checkpoint is not None:
        task.restore_checkpoint_extras(cfg, ctx, run.checkpoint)
    accum = int(cfg.train.grad_accum_steps)
    train_loader = task.build_train_loader(cfg, ctx, run.start_iter * accum)
    # The task's entries go into every checkpoint the run writes (last, final, best).
    run.checkpointer.extra.update(task.checkpoint_extras(cfg, ctx))
    start_images = task.start_training(cfg, ctx, run, train_loader)
    evaluator = task.build_evaluator(cfg, run.eval_model, ctx, run.precision)
    step = task.build_step(cfg, ctx)
    validation = build_validation_hook(task.validation_period(cfg), run.core, step,
                                       lambda: task.build_validation_loader(cfg, ctx), ctx.device, run.precision,
                                       ctx.logger)
    hooks = [validation, *task.extra_hooks(cfg, ctx, run)]
    return run_training(cfg, ctx, run, train_loader, step, evaluator, extra_hooks=hooks, start_images=start_images)


def checkpoint_overrides(overrides: Sequence[str]) -> list[str]:
    """eval_only: the model is rebuilt from the checkpoint's own config; of the command line's
    overrides, only the model.*/backbone.* keys (other than the weights) refine it."""
    return [str(o) for o in overrides if str(o).startswith(("model.", "backbone."))
            and not str(o).startswith(("model.weights=", "backbone.weights="))]


def checkpoint_model(cfg: DictConfig, model_overrides: Sequence[str] = (), device: str = "cpu",
                     checkpoint=None) -> tuple[nn.Module, DictConfig]:
    """The model of cfg.model.weights rebuilt by build_model from the checkpoint's own stored
    config (upgraded, then refined by `model_overrides`, e.g. model.roi_heads.score_thresh=0.3),
    with its weights; and the run's config describing it: its `model` and `backbone` sections
    are those the model was built from (what config.yaml records), every other section (data,
    test, train) is the run's. model.weights keeps the name given (a file or a published name).
    `checkpoint`: the file already read (read_model_checkpoint), so that it is read once."""
    from detector.weights.loading import model_from_checkpoint, read_model_checkpoint

    weights = cfg.model.weights
    if checkpoint is None:
        checkpoint = read_model_checkpoint(str(weights))
    model = model_from_checkpoint(checkpoint, str(weights), overrides=list(model_overrides), device=str(device))
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = OmegaConf.create(OmegaConf.to_container(model.config.model, resolve=True))
        cfg.backbone = OmegaConf.create(OmegaConf.to_container(model.config.backbone, resolve=True))
        cfg.model.weights = weights
        cfg.backbone.weights = None
    return model, cfg


def evaluate_checkpoint(cfg: DictConfig, task: Task, model_overrides: Sequence[str] = (),
                        ctx: RunContext | None = None) -> dict[str, Any]:
    """eval_only: the metrics of cfg.model.weights on the test split (also written to
    output_dir: config.yaml, metrics, pictures, tb/). The model is the checkpoint's own
    (checkpoint_model); `model_overrides` are the command line's model.*/backbone.* keys.
    An exported file (ONNX, OpenVINO, TorchScript: detector/deploy/) is run by its runtime at
    test.precision, through the same evaluator and test split."""
    from detector.deploy.file_kind import is_exported_file
    from detector.weights.loading import read_model_checkpoint

    ctx = ctx or open_run_context(cfg)
    if is_exported_file(str(cfg.model.weights)):
        from detector.deploy.run_settings import exported_run_model

        model, cfg, iteration = exported_run_model(cfg, model_overrides, ctx.logger)
        amp = "none"   # the runtime computes at test.precision; no autocast around it
    else:
        checkpoint = read_model_checkpoint(str(cfg.model.weights))   # the one read: weights, config, iteration
        iteration = checkpoint.iteration
        model, cfg = checkpoint_model(cfg, model_overrides, device=str(ctx.device), checkpoint=checkpoint)
        del checkpoint   # the model holds the weights now
        amp = str(cfg.train.amp)
    resolve_classes(cfg, task, ctx)
    write_run_config(cfg, ctx)
    seed_everything(int(cfg.seed))
    model.eval()
    precision = resolve_precision(amp, ctx.device, ctx.logger)
    evaluator = task.build_evaluator(cfg, lambda: model, ctx, precision)
    scalars, images = evaluator(iteration)
    log_evaluation(ctx.output_dir, iteration, scalars, images)
    return evaluator.metrics
