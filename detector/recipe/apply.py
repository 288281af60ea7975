"""schedule=auto in the config: which keys the recipe sets, and setting them.

The recipe sets a key only when the composed config has it (a user's model or head without,
say, an RPN keeps working) and the command line did not give it (an override wins). Two
paths reach the same values:
- `load_config` marks those keys with `${recipe:KEY}` (mark_recipe_keys), resolved when first
  read, so `build_model(load_config([...]))` builds the run's model and a config that never
  builds one never reads the data;
- a training run (engine/run.py prepare) marks them the same way from Hydra's overrides,
  then replaces every mark by its value and logs each choice with the figure behind it
  (apply_recipe), before config.yaml is written: config.yaml and the checkpoints hold plain
  values and rebuild the same model.
"""
from __future__ import annotations

import json
import logging
from typing import Iterable, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from detector.recipe.budget import TrainingBudget
from detector.recipe.choices import Choice, RecipeContext, choose, flatten
from detector.recipe.statistics import SplitStatistics, split_statistics

MARK = "${recipe:%s}"
# Every key a choice may set (choices.py); the light_model keys come from recipe.light_model.
CHOICE_KEYS = (
    "model.input.min_size_test", "model.input.max_size_test", "aug.min_size", "aug.max_size",
    "model.anchor_generator.sizes", "model.anchor_generator.aspect_ratios",
    "model.rpn.batch_size_per_image", "model.rpn.post_nms_topk_train", "model.rpn.pre_nms_topk_train",
    "model.rpn.post_nms_topk_test", "model.rpn.pre_nms_topk_test",
    "model.roi_heads.batch_size_per_image", "model.roi_heads.detections_per_img",
    "solver.optimizer", "solver.base_lr", "solver.weight_decay", "solver.reference_batch_size", "solver.warmup_iters",
)
_statistics_cache: dict[str, SplitStatistics] = {}
_choices_cache: dict[str, list[Choice]] = {}


def recipe_enabled(cfg: DictConfig) -> bool:
    return "recipe" in cfg and bool(cfg.recipe.enabled)


# A whole detector's weights (model.weights) fix its anchors and the widths of its neck and head.
KEPT_WITH_DETECTOR_WEIGHTS = ("model.anchor_generator.sizes", "model.anchor_generator.aspect_ratios")


def recipe_keys(cfg: DictConfig) -> list[str]:
    light = [f"model.{key}" for key in flatten(OmegaConf.to_container(cfg.recipe.light_model, resolve=True))]
    if OmegaConf.select(cfg, "model.weights"):
        return [k for k in CHOICE_KEYS if k not in KEPT_WITH_DETECTOR_WEIGHTS]
    return [*CHOICE_KEYS, *light]


def given_keys(overrides: Iterable[str]) -> set[str]:
    """The keys command-line overrides set (`a.b=1`, `+a.b=1`, `++a.b=1`, `~a.b`)."""
    keys = set()
    for override in overrides:
        key = str(override).lstrip("+~").split("=", 1)[0].strip()
        if key and not key.startswith("hydra"):
            keys.add(key)
    return keys


def _is_given(key: str, given: set[str]) -> bool:
    """An override of the key itself or of a node above it."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in given for n in range(1, len(parts) + 1))


def _split(cfg: DictConfig, key: str) -> tuple[DictConfig | None, str]:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    # keys(), not `in`: `in` resolves the value, which for a mark would run the recipe.
    return (parent if isinstance(parent, DictConfig) and leaf in parent.keys() else None), leaf


def is_marked(cfg: DictConfig, key: str) -> bool:
    parent, leaf = _split(cfg, key)
    if parent is None:
        return False
    raw = OmegaConf.to_container(parent, resolve=False)[leaf]
    return isinstance(raw, str) and raw.strip() == MARK % key


def defer_max_iter_to_budget(cfg: DictConfig, given: set[str]) -> None:
    """With train.time_budget set, a train.max_iter that only a schedule file gave becomes null:
    the run plans it from the budget (engine/time_budget.py). One given on the command line wins."""
    if OmegaConf.select(cfg, "train.time_budget") is not None and "train.max_iter" not in given:
        if cfg.train.budget.schedule_max_iter is None and not OmegaConf.is_missing(cfg.train, "max_iter"):
            cfg.train.budget.schedule_max_iter = cfg.train.max_iter  # the LR steps' reference
        cfg.train.max_iter = None


def mark_auto_keys(cfg: DictConfig, overrides: Iterable[str]) -> list[str]:
    """What a run decides itself, in place: train.max_iter left to train.time_budget, and
    (schedule=auto) every recipe key the config has and the overrides leave alone, marked;
    returns the keys marked."""
    given = given_keys(overrides)
    if "train" in cfg and "time_budget" in cfg.train:
        defer_max_iter_to_budget(cfg, given)
    return mark_recipe_keys(cfg, given)


def mark_recipe_keys(cfg: DictConfig, given: set[str]) -> list[str]:
    """Mark, in place, every recipe key the config has and is not in `given`; returns them.
    Nothing happens unless the schedule turns the recipe on (recipe.enabled)."""
    if not recipe_enabled(cfg):
        return []
    if cfg.recipe.levels is None:  # the model's own number of anchor levels, read before marking
        sizes = OmegaConf.select(cfg, "model.anchor_generator.sizes")
        cfg.recipe.levels = len(sizes) if sizes is not None and not is_marked(cfg, "model.anchor_generator.sizes") else 5
    marked = []
    for key in recipe_keys(cfg):
        parent, leaf = _split(cfg, key)
        if parent is None or _is_given(key, given):
            continue
        if not is_marked(cfg, key):
            with open_dict(parent):
                parent[leaf] = MARK % key
        marked.append(key)
    return marked


def _given_value(cfg: DictConfig, key: str):
    parent, leaf = _split(cfg, key)
    return None if parent is None or is_marked(cfg, key) else parent[leaf]


def training_statistics(cfg: DictConfig) -> SplitStatistics:
    """The training split's figures (cached per dataset config: read once per process)."""
    from detector.data.build import build_index

    key = json.dumps(OmegaConf.to_container(cfg.dataset, resolve=True), sort_keys=True, default=str)
    if key not in _statistics_cache:
        _statistics_cache[key] = split_statistics(build_index(cfg, "train").records)
    return _statistics_cache[key]


def training_budget(cfg: DictConfig) -> TrainingBudget | None:
    """The time budget that will decide train.max_iter, and the device that spends it; None when
    train.max_iter does (given, or no budget). Read from the config, the device kind
    (train.device, auto: CUDA when visible) and torch's thread count only, so the recipe's sizes
    are the same in load_config and in the run on one machine."""
    import torch

    from detector.utils.durations import configured_budget_s
    from detector.utils.hardware import device_kind

    train = cfg.train
    if "time_budget" not in train or (not OmegaConf.is_missing(train, "max_iter") and train.max_iter is not None):
        return None
    kind = device_kind(str(train.device))
    budget = train.budget
    seconds = configured_budget_s(train, kind)
    if seconds is None:
        return None
    return TrainingBudget(seconds=float(seconds), device=kind, threads=int(torch.get_num_threads()),
                          images_per_step=int(cfg.dataloader.batch_size) * int(train.grad_accum_steps),
                          reserved_share=float(budget.margin) + float(budget.max_eval_share))


def recipe_choices(cfg: DictConfig) -> list[Choice]:
    """The recipe's choices for this config (cached per dataset, bounds and context)."""
    stats = training_statistics(cfg)
    weights = [OmegaConf.select(cfg, "backbone.weights"), OmegaConf.select(cfg, "model.weights")]
    ctx = RecipeContext(levels=int(cfg.recipe.levels or 5), backbone_weights=bool(weights[0]),
                        model_weights=bool(weights[1]),
                        given_min_size_test=_given_value(cfg, "model.input.min_size_test"),
                        given_max_size_test=_given_value(cfg, "model.input.max_size_test"),
                        given_train_sizes=_given_value(cfg, "aug.min_size") is not None,
                        budget=training_budget(cfg))
    settings = OmegaConf.to_container(cfg.recipe, resolve=True)
    key = json.dumps([OmegaConf.to_container(cfg.dataset, resolve=True), settings, ctx.__dict__],
                     sort_keys=True, default=str)
    if key not in _choices_cache:
        _choices_cache[key] = choose(stats, settings, ctx)
    return _choices_cache[key]


def _resolve_mark(key: str, *, _root_: DictConfig):
    """`${recipe:KEY}`: the recipe's value for KEY."""
    for choice in recipe_choices(_root_):
        if choice.key == key:
            return choice.value
    raise KeyError(f"${{recipe:{key}}}: schedule=auto makes no choice for {key} with this config "
                   f"(starting weights keep their model's anchors and widths); set {key} on the command line.")


def register_recipe_resolver() -> None:
    if not OmegaConf.has_resolver("recipe"):
        OmegaConf.register_new_resolver("recipe", _resolve_mark)


register_recipe_resolver()


def apply_recipe(cfg: DictConfig, logger: logging.Logger, overrides: Sequence[str] | None = None) -> list[Choice]:
    """Mark the recipe keys (from `overrides`, when given), then replace every mark by the
    recipe's value, logging each choice with its figure; keys given on the command line are
    logged as kept. Returns the choices applied."""
    if not recipe_enabled(cfg):
        return []
    if overrides is not None:
        mark_recipe_keys(cfg, given_keys(overrides))
    marked = [key for key in recipe_keys(cfg) if is_marked(cfg, key)]
    if not marked:
        return []
    stats = training_statistics(cfg)
    logger.info("schedule=auto: the training split has %d images, %d boxes, %d classes (images per class: %s).",
                stats.num_images, stats.num_boxes, len(stats.images_per_class),
                ", ".join(f"{label}: {count}" for label, count in stats.images_per_class.items()) or "none")
    applied = []
    choices = {choice.key: choice for choice in recipe_choices(cfg)}
    for key in recipe_keys(cfg):
        parent, leaf = _split(cfg, key)
        if parent is None:
            continue
        choice = choices.get(key)
        if key in marked and choice is not None:
            parent[leaf] = choice.value
            (logger.warning if choice.warning else logger.info)("schedule=auto: %s=%s (%s).", key,
                                                                 _show(choice.value), choice.reason)
            applied.append(choice)
        elif key in marked:  # no choice for it (kept from the starting weights' model): unmark
            raise KeyError(f"schedule=auto marked {key} but makes no choice for it; set {key} on the command line.")
        elif choice is not None:
            logger.info("schedule=auto: %s=%s as given (the recipe would choose %s).", key, _show(parent[leaf]),
                        _show(choice.value))
    return applied


def keep_recorded_choices(cfg: DictConfig, applied: Sequence[Choice], recorded: DictConfig | None,
                          logger: logging.Logger) -> list[str]:
    """A resumed run continues the model its checkpoint was trained as: each value the recipe just
    chose that differs from the one the checkpoint's config records (the size rule weighs the
    budget against this machine's threads, so a resume elsewhere may choose another size, and
    with it other anchors) is replaced by the recorded one, with a warning. Returns the keys kept."""
    if recorded is None:
        return []
    kept = []
    for choice in applied:
        theirs = OmegaConf.select(recorded, choice.key, default=None)
        parent, leaf = _split(cfg, choice.key)
        if theirs is None or parent is None or _show(theirs) == _show(parent[leaf]):
            continue
        logger.warning("schedule=auto: %s=%s as the resumed checkpoint's run chose it (the recipe now chooses %s "
                       "on this machine); a resume continues the same model.", choice.key, _show(theirs),
                       _show(parent[leaf]))
        parent[leaf] = theirs
        kept.append(choice.key)
    return kept


def _show(value) -> str:
    return str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value).replace(" ", "")
