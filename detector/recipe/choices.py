"""The recipe's decisions, from a split's figures (statistics.SplitStatistics) and the bounds of
conf/schedule/auto.yaml (`recipe:`): pure functions, each choice with the figure behind it.

What each decision is for:
- input size: the small objects (a low quantile of box sizes) must stay at or above the
  smallest anchor after the resize, and a photo must not be processed bigger than its
  objects need (the cost of a step grows with the pixels); under a time budget, no bigger
  than leaves recipe.budget.min_iters iterations (budget.py: a from-scratch model learns
  little in fewer, whatever its input size);
- anchors: the smallest from those small objects, the largest from the large ones, spaced
  geometrically over the FPN levels (so a dataset of large objects on small photos does not
  spend its top levels on sizes bigger than the image); extra aspect ratios for elongated boxes;
- sampling: the RPN and RoI sample sizes, proposals and detections per image follow the
  number of objects per image;
- solver: AdamW for a model trained from scratch (it learns in the minutes a CPU recipe has;
  measured on shapes: AP 0.171 against SGD's 0.030), SGD at Detectron2's fine-tuning rate for
  starting weights, each with its warm-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from detector.recipe.budget import BudgetFit, TrainingBudget, fit_size_to_budget
from detector.recipe.statistics import SplitStatistics


@dataclass(frozen=True)
class Choice:
    key: str       # the config key it sets, e.g. model.anchor_generator.sizes
    value: Any
    reason: str    # the figure behind it, for the log
    warning: bool = False   # logged as a warning: the bounds kept the recipe from what the data needs


@dataclass(frozen=True)
class RecipeContext:
    """What the recipe needs from the rest of the config."""
    levels: int                        # anchor levels of the model (FPN P2..P6: 5)
    backbone_weights: bool             # backbone.weights set
    model_weights: bool                # model.weights set (a whole detector)
    given_min_size_test: int | None = None   # the user's model.input.min_size_test, if given
    given_max_size_test: int | None = None
    given_train_sizes: bool = False    # the user gave aug.min_size
    # The run's time budget, when one decides train.max_iter (None: train.max_iter given, or no
    # budget): the input size is then weighed against it (budget.py).
    budget: TrainingBudget | None = None


def flatten(node: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"fpn": {"out_channels": 128}} -> {"fpn.out_channels": 128}."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _round_to(value: float, multiple: int) -> int:
    return int(max(multiple, multiple * round(value / multiple)))


def _pow2_ceil(value: float) -> int:
    return int(2 ** math.ceil(math.log2(max(1.0, value))))


def _quantile(values: np.ndarray, q: float, default: float) -> float:
    return float(np.quantile(values, q)) if len(values) else default


def _train_sizes(size: int, aspect: float, s: Mapping) -> tuple[int, int, list[int], int]:
    """At test size `size` (images' long/short ratio `aspect`): the longest test edge, the jitter
    step, the training shortest edges and their longest-edge cap."""
    multiple = int(s["size_multiple"])
    max_size = _round_to(math.ceil(size * aspect / multiple) * multiple, multiple)
    step = max(multiple, _round_to(size * float(s["jitter"]), multiple))
    train_sizes = sorted({max(multiple, size - step), size, size + step})
    train_max = _round_to(math.ceil(max_size * max(train_sizes) / size / multiple) * multiple, multiple)
    return max_size, step, train_sizes, train_max


def _train_pixels(stats: SplitStatistics, aspect: float, s: Mapping) -> Callable[[int], float]:
    """The mean pixels of one training image when testing at a size: over the training sizes
    (equally likely) and the split's images, shortest edge x longest edge within its cap."""
    ratios = stats.image_long / np.maximum(stats.image_short, 1) if stats.num_images else np.ones(1)

    def pixels(size: int) -> float:
        _, _, train_sizes, train_max = _train_sizes(size, aspect, s)
        return float(np.mean([t * np.minimum(t * ratios, train_max) for t in train_sizes]))

    return pixels


def _budget_text(fit: BudgetFit, budget: TrainingBudget, stats: SplitStatistics, s: Mapping) -> str:
    """The figures of the budget rule, for the log."""
    where = f"{budget.seconds / 60:.1f} min on {budget.device}" + (
        f" ({budget.threads} threads)" if budget.device == "cpu" else "")
    head = (f"the budget ({where}, about {fit.train_s:.0f} s of training steps at {budget.images_per_step} images "
            f"each) buys about {fit.iters_wanted} iterations at {fit.wanted} px ({fit.step_s_wanted:.2f} s each, "
            "estimated)")
    if not fit.lowered:
        return head + (f", at least recipe.budget.min_iters={fit.min_iters}" if not fit.short else
                       f", fewer than recipe.budget.min_iters={fit.min_iters}, but {fit.wanted} px is already the "
                       "floor (recipe.min_input_size)")
    q = float(s["small_object_quantile"])
    below = float(np.mean(stats.relative_box_size * fit.chosen < float(s["min_object_px"]) - 1e-6)) \
        if stats.num_boxes else 0.0
    text = (f"{head}, fewer than recipe.budget.min_iters={fit.min_iters}: lowered to {fit.chosen} px, "
            f"{fit.step_s_chosen:.2f} s each, about {fit.iters_chosen} iterations; there {below:.0%} of the boxes "
            f"(wanted: {q:.0%}) measure below {s['min_object_px']} px, the smallest anchor")
    if fit.short:
        text += f" (recipe.min_input_size={s['min_input_size']} is the floor)"
    return text + ("; for the size the objects want give a longer train.time_budget, or set "
                   "model.input.min_size_test and aug.min_size, or recipe.budget.min_iters")


def input_sizes(stats: SplitStatistics, s: Mapping, budget: TrainingBudget | None = None) -> list[Choice]:
    """Shortest edge for testing and training (with its jitter) and the longest-edge caps;
    lowered when a time budget would buy too few iterations at the size the objects want."""
    multiple = int(s["size_multiple"])
    native = _quantile(stats.image_short, 0.5, float(s["max_input_size"]))
    small = _quantile(stats.relative_box_size, float(s["small_object_quantile"]), 1.0)
    needed = float(s["min_object_px"]) / max(small, 1e-6)
    # Never bigger than the images need: at most their own size times max_upscale, which
    # enlarges small photos only when their small objects would fall below min_object_px.
    ceiling = min(float(s["max_input_size"]), native * float(s["max_upscale"]))
    size = min(max(needed, float(s["min_input_size"])), ceiling)
    size = _round_to(min(size, ceiling), multiple) if ceiling >= multiple else multiple
    aspect = max(1.0, _quantile(stats.image_long / np.maximum(stats.image_short, 1), 0.9, 1.0))
    aspect = min(aspect, float(s["max_aspect"]))
    q = float(s["small_object_quantile"])
    why = (f"{q:.0%} of the boxes are smaller than {small:.3f} of their image's shortest edge (median "
           f"{native:.0f} px): at {size} px they measure {small * size:.1f} px (wanted >= {s['min_object_px']} px; "
           f"bounds {s['min_input_size']}..min({s['max_input_size']}, {s['max_upscale']} x the images' size))")
    short = small * size < float(s["min_object_px"]) - 1e-6
    if short:
        why += (f"; the small objects stay below {s['min_object_px']} px: raise recipe.max_input_size / "
                "recipe.max_upscale, or set model.input.min_size_test and aug.min_size")
    if budget is not None and int(s["budget"]["min_iters"]) > 0:
        floor = int(math.ceil(float(s["min_input_size"]) / multiple) * multiple)
        fit = fit_size_to_budget(size, floor, multiple, _train_pixels(stats, aspect, s), s["budget"], budget)
        why += "; " + _budget_text(fit, budget, stats, s)
        # A warning when the budget's size leaves the small objects below the smallest anchor.
        short = short or (fit.lowered and (fit.short or small * fit.chosen < float(s["min_object_px"]) - 1e-6))
        size = fit.chosen
    max_size, step, train_sizes, train_max = _train_sizes(size, aspect, s)
    return [
        Choice("model.input.min_size_test", size, why, warning=short),
        Choice("model.input.max_size_test", max_size,
               f"90% of the images have a long/short side ratio <= {aspect:.2f} (capped at {s['max_aspect']})"),
        Choice("aug.min_size", train_sizes, f"{size} px +/- {step} (recipe.jitter={s['jitter']}, to multiples of {multiple})"),
        Choice("aug.max_size", train_max, f"max_size_test at the largest training scale {max(train_sizes)}"),
    ]


def anchors(stats: SplitStatistics, s: Mapping, ctx: RecipeContext, min_size_test: int) -> list[Choice]:
    """Anchor sizes per level (and aspect ratios for elongated boxes), at the test input size."""
    if ctx.model_weights:
        return []  # the starting detector's RPN was trained on its own anchors: keep them
    levels = max(1, int(ctx.levels))
    q_small, q_large = float(s["small_object_quantile"]), float(s["large_object_quantile"])
    small_px = _quantile(stats.relative_box_size, q_small, 0.1) * min_size_test
    large_px = _quantile(stats.relative_box_size, q_large, 0.5) * min_size_test
    lowest, highest = float(s["min_anchor"]), float(s["max_first_anchor"])
    first = min(max(2 ** round(math.log2(max(small_px, 1.0))), lowest), highest)
    top_wanted = max(large_px * float(s["large_object_margin"]), first)
    ratio = (top_wanted / first) ** (1 / (levels - 1)) if levels > 1 else 2.0
    ratio = min(max(ratio, float(s["min_level_ratio"])), 2.0)
    sizes = [int(round(first * ratio ** i)) for i in range(levels)]
    choices = [Choice("model.anchor_generator.sizes", sizes,
                      f"at {min_size_test} px, {q_small:.0%} of the boxes are below {small_px:.0f} px and "
                      f"{q_large:.0%} below {large_px:.0f} px: {first:g} px to about {large_px:.0f} x "
                      f"{s['large_object_margin']}, x{ratio:.2f} per level over {levels} levels")]
    ratios = stats.box_aspect_ratio
    low, high = _quantile(ratios, 0.1, 1.0), _quantile(ratios, 0.9, 1.0)
    elongated = float(s["elongated_ratio"])
    aspect = [0.5, 1.0, 2.0]
    if low < 1 / elongated:
        aspect.insert(0, round(1 / round(1 / max(low, 1 / float(s["max_aspect_ratio"]))), 3))
    if high > elongated:
        aspect.append(float(round(min(high, float(s["max_aspect_ratio"])))))
    choices.append(Choice("model.anchor_generator.aspect_ratios", aspect,
                          f"80% of the boxes have height/width in [{low:.2f}, {high:.2f}]"
                          + ("" if len(aspect) == 3 else f" (beyond 1/{elongated:g}..{elongated:g}: elongated)")))
    return choices


def sampling(stats: SplitStatistics, s: Mapping) -> list[Choice]:
    """Sample sizes, proposals and detections from the boxes per image."""
    with_boxes = stats.boxes_per_image[stats.boxes_per_image > 0]
    typical = _quantile(with_boxes, 0.9, 1.0)
    most = _quantile(with_boxes, 0.99, 1.0)
    largest = float(with_boxes.max()) if len(with_boxes) else 1.0
    why = f"90% of the images have <= {typical:.0f} boxes, 99% <= {most:.0f}, at most {largest:.0f}"
    post_train = int(min(max(100 * math.ceil(s["proposals_per_box"] * most / 100), 300), 2000))
    post_test = int(min(max(100 * math.ceil(s["proposals_per_box"] * most / 200), 300), 1000))
    return [
        Choice("model.rpn.batch_size_per_image", min(max(_pow2_ceil(16 * typical), 128), 256), why),
        Choice("model.rpn.post_nms_topk_train", post_train, why),
        Choice("model.rpn.pre_nms_topk_train", 2 * post_train, "twice the proposals kept"),
        Choice("model.rpn.post_nms_topk_test", post_test, why),
        Choice("model.rpn.pre_nms_topk_test", 2 * post_test, "twice the proposals kept"),
        Choice("model.roi_heads.batch_size_per_image", min(max(_pow2_ceil(8 * typical), 64), 512), why),
        Choice("model.roi_heads.detections_per_img", int(min(max(100, 10 * math.ceil(2 * largest / 10)), 300)),
               f"at most {largest:.0f} boxes in an image (COCO AP counts 100 detections)"),
    ]


def solver(s: Mapping, ctx: RecipeContext) -> list[Choice]:
    """Optimizer, learning rate and warm-up; a light neck and head when nothing is pretrained."""
    start = "model.weights" if ctx.model_weights else "backbone.weights" if ctx.backbone_weights else None
    recipe = s["pretrained"] if start else s["scratch"]
    why = f"starting weights ({start} set)" if start else "from scratch (no backbone.weights nor model.weights)"
    choices = [Choice(f"solver.{key}", recipe[key], why) for key in
               ("optimizer", "base_lr", "weight_decay", "reference_batch_size", "warmup_iters")]
    if not ctx.model_weights:  # a whole detector's weights fix the widths of its neck and head
        for key, value in flatten(s["light_model"]).items():
            choices.append(Choice(f"model.{key}", value, "trained here, not loaded: the light neck and head of the "
                                                         "CPU recipes"))
    return choices


def choose(stats: SplitStatistics, settings: Mapping, ctx: RecipeContext) -> list[Choice]:
    """Every decision of the recipe, in the order they are logged."""
    # A size the user gave (test or training) is theirs: the budget does not lower the others.
    chosen_by_user = ctx.given_min_size_test is not None or ctx.given_train_sizes
    sizes = input_sizes(stats, settings, None if chosen_by_user else ctx.budget)
    test_size = ctx.given_min_size_test or next(c.value for c in sizes if c.key == "model.input.min_size_test")
    return [*sizes, *anchors(stats, settings, ctx, int(test_size)), *sampling(stats, settings), *solver(settings, ctx)]
