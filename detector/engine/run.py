"""The run skeleton, the same for every task: train (or resume) and evaluate, or evaluate a
checkpoint. A Task (detector/engine/task.py) supplies the model, data, step, evaluator and
its extra hooks; this module never imports a task -- the tools pick one (detector/tasks/).
"""
from __future__ import annotations

from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from detector.engine.context import RunContext, seed_everything
from detector.engine.precision import resolve_precision
from detector.engine.task import Task
from detector.engine.training_run import log_evaluation, prepare_training, run_training
from detector.utils.distributed import barrier, is_main_process


def resolve_classes(cfg: DictConfig, task: Task) -> list[str]:
    """The task fills model.class_names from its data, rank 0 first: reading the classes may
    write the data (the generated shapes), which two processes must not do at once."""
    names = task.resolve_classes(cfg) if is_main_process() else None
    barrier()
    if names is None:
        names = task.resolve_classes(cfg)
    return names


def adopt_weight_settings(cfg: DictConfig, ctx: RunContext) -> None:
    """The input settings the starting weights were made with, into cfg (see
    detector/weights/weight_settings.py), rank 0 first: a published name may be fetched and
    converted, which two processes must not do at once."""
    from detector.weights.weight_settings import adopt_weight_settings as adopt

    if is_main_process():
        adopt(cfg, ctx.logger)
    barrier()
    if not is_main_process():
        adopt(cfg, ctx.logger)


def apply_auto_settings(cfg: DictConfig, ctx: RunContext) -> None:
    """What the run decides itself, before the model is built: train.max_iter left to
    train.time_budget unless the command line gave it, and under schedule=auto the recipe's
    choices from the training split (detector/recipe/), logged with their figures. Every
    rank computes the same values from the same data (after resolve_classes wrote it)."""
    from detector.engine.run_summary import command_line_overrides
    from detector.recipe.apply import apply_recipe, mark_auto_keys

    overrides = command_line_overrides()  # None outside Hydra: load_config already marked the keys
    if overrides is not None:
        mark_auto_keys(cfg, overrides)
    apply_recipe(cfg, ctx.logger)


def write_run_config(cfg: DictConfig, ctx: RunContext) -> None:
    """output_dir/config.yaml: the run's configuration, fully resolved (rank 0 writes)."""
    if is_main_process():
        OmegaConf.save(cfg, ctx.output_dir / "config.yaml", resolve=True)
    barrier()


def prepare(cfg: DictConfig, task: Task) -> tuple[RunContext, nn.Module]:
    """Context, classes, the starting weights' input settings, config.yaml and the task's model
    (with its initial weights), identically initialised on every rank (same seed before building)."""
    ctx = RunContext(cfg)
    resolve_classes(cfg, task)
    adopt_weight_settings(cfg, ctx)
    apply_auto_settings(cfg, ctx)
    write_run_config(cfg, ctx)
    seed_everything(int(cfg.seed))
    return ctx, task.build_model(cfg, ctx.logger)


def train(cfg: DictConfig, task: Task) -> dict[str, Any]:
    """Train (or resume from output_dir/checkpoints/last.pth), evaluating every
    train.eval_period iterations and at the end; returns the last evaluation's metrics.

    The task's methods are called in this order: resolve_classes, build_model,
    build_train_loader, start_training, build_evaluator, extra_hooks, build_step."""
    ctx, model = prepare(cfg, task)  # initial weights here; a resume replaces them
    run = prepare_training(cfg, ctx, model)
    accum = int(cfg.train.grad_accum_steps)
    train_loader = task.build_train_loader(cfg, ctx, run.start_iter * accum)
    start_images = task.start_training(cfg, ctx, run, train_loader)
    evaluator = task.build_evaluator(cfg, run.eval_model, ctx, run.precision)
    hooks = list(task.extra_hooks(cfg, ctx, run))
    return run_training(cfg, ctx, run, train_loader, task.build_step(cfg, ctx), evaluator, extra_hooks=hooks,
                        start_images=start_images)


def checkpoint_overrides(overrides: Sequence[str]) -> list[str]:
    """eval_only: the model is rebuilt from the checkpoint's own config; of the command line's
    overrides, only the model.*/backbone.* keys (other than the weights) refine it."""
    return [str(o) for o in overrides if str(o).startswith(("model.", "backbone."))
            and not str(o).startswith(("model.weights=", "backbone.weights="))]


def checkpoint_model(cfg: DictConfig, model_overrides: Sequence[str] = (), device: str = "cpu") -> tuple[nn.Module, DictConfig]:
    """The model of cfg.model.weights rebuilt by build_model from the checkpoint's own stored
    config (upgraded, then refined by `model_overrides`, e.g. model.roi_heads.score_thresh=0.3),
    with its weights; and the run's config describing it: its `model` and `backbone` sections
    are those the model was built from (what config.yaml records), every other section (data,
    test, train) is the run's. model.weights keeps the name given (a file or a published name)."""
    from detector.weights.loading import load_model

    weights = cfg.model.weights
    model = load_model(str(weights), overrides=list(model_overrides), device=str(device))
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = OmegaConf.create(OmegaConf.to_container(model.config.model, resolve=True))
        cfg.backbone = OmegaConf.create(OmegaConf.to_container(model.config.backbone, resolve=True))
        cfg.model.weights = weights
        cfg.backbone.weights = None
    return model, cfg


def _checkpoint_iteration(path: str) -> int | None:
    """The iteration a checkpoint (.pth, or .safetensors: its header) was written at; None for
    bare weights."""
    from detector.weights.checkpoint_io import checkpoint_iteration
    from detector.weights.zoo import resolve_weights

    return checkpoint_iteration(resolve_weights(path))


def evaluate_checkpoint(cfg: DictConfig, task: Task, model_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """eval_only: the metrics of cfg.model.weights on the test split (also written to
    output_dir: config.yaml, metrics, pictures, tb/). The model is the checkpoint's own
    (checkpoint_model); `model_overrides` are the command line's model.*/backbone.* keys."""
    ctx = RunContext(cfg)
    model, cfg = checkpoint_model(cfg, model_overrides, device=str(ctx.device))
    resolve_classes(cfg, task)
    write_run_config(cfg, ctx)
    seed_everything(int(cfg.seed))
    iteration = _checkpoint_iteration(str(cfg.model.weights))
    model.eval()
    precision = resolve_precision(str(cfg.train.amp), ctx.device, ctx.logger)
    evaluator = task.build_evaluator(cfg, lambda: model, ctx, precision)
    scalars, images = evaluator(iteration)
    log_evaluation(ctx.output_dir, iteration, scalars, images)
    return evaluator.metrics
