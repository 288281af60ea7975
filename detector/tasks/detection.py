"""Object detection as a task of the engine (tools/train_net.py): its config checks, how a
batch reaches the model, how the test set is evaluated and drawn, its held-out batches for
the validation loss, the category ids its checkpoints carry and the label statistics. The
loop, resume, checkpoints, validation and writers are the engine's (detector/engine/run.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, open_dict
from torch import nn

from detector.engine.context import RunContext, sync_from_rank0
from detector.engine.task import TestSetEvaluator, Task
from detector.evaluation import evaluate_detector
from detector.evaluation.coco_backends import stat_names
from detector.evaluation.analysis_schedule import analysis_mode, draws_pictures
from detector.tasks.detection_step import DetectionStep, needs_keypoints, needs_masks
from detector.utils.distributed import is_main_process


def build_eval_loader(cfg: DictConfig, rank: int, world_size: int):
    """The sharded test loader; with test.max_images, only the first N test images (the same
    loader, workers and batch size as without)."""
    from detector.data import build_test_loader

    return build_test_loader(cfg, rank, world_size, max_images=cfg.test.max_images)


class DetectionEvaluator(TestSetEvaluator):
    """eval_function for EvalHook: run, gather, evaluate, write, draw.

    A mask model is evaluated by box and by mask: scalars "segm/AP", ... and
    "segm_per_category/<class>" next to the "bbox" ones, and `metrics` (what train() and
    eval_only return) is then {"bbox": {...}, "segm": {...}}; a box model's `metrics` is the
    box evaluation itself, as before."""

    _evaluated_at: int | None = -1   # the iteration of the latest evaluation (-1: none yet)

    def build_loader(self):
        return build_eval_loader(self.cfg, self.rank, self.world_size)

    def __call__(self, iteration: int | None) -> tuple[dict[str, float], list[tuple[str, Any]]]:
        model = self.model_for_eval()
        sync_from_rank0(model)
        from detector.evaluation.tta import build_tta

        tta = build_tta(self.cfg, model)  # the model itself unless test.aug=true
        if tta is not model:
            self.logger.info("Test-time augmentation: %d views (scales %s x test size%s), merged by %s.",
                             tta.num_views, tta.scales, ", each also mirrored" if tta.flip else "", tta.merge)
        iou_types = self.iou_types(tta is not model)
        model = tta
        dataset = self.loader.dataset
        num_samples = int(self.cfg.train.vis_period_images) if is_main_process() else 0
        start = time.perf_counter()
        metrics, samples = evaluate_detector(
            model, self.loader, dataset.coco_gt, dataset.label_to_category_id, self.device,
            output_dir=self.output_dir if is_main_process() else None, iteration=iteration,
            backend=str(self.cfg.test.evaluator), autocast_dtype=self.precision.dtype,
            num_samples=num_samples, log=self.logger, iou_types=iou_types,
            # Read only for a keypoint model: a user's dataset config without keypoints has no such key.
            keypoint_sigmas=self.cfg.dataset.keypoint_sigmas if "keypoints" in iou_types else None,
        )
        took = time.perf_counter() - start
        self.logger.info("Evaluation took %.1fs.", took)
        # Undefined numbers (None) are kept: metrics.jsonl and results.csv show every column;
        # the hooks put only the defined ones in TensorBoard.
        # A mask model's metrics are keyed by IoU type; a box model's are the box evaluation itself.
        by_type = metrics if iou_types != ("bbox",) else {"bbox": metrics}
        scalars = {}
        for iou_type, numbers in by_type.items():
            scalars.update({f"{iou_type}/{name}": numbers.get(name) for name in stat_names(iou_type)})
            scalars.update({f"{iou_type}_per_category/{name}": ap for name, ap in numbers["per_category"].items()})
        scalars["time/evaluation"] = took
        images = self._draw(samples, list(dataset.class_names))
        self._evaluated_at = iteration
        if is_main_process() and draws_pictures(self.analysis, final=self.is_final(iteration)):
            start = time.perf_counter()
            images += self._analyse(dataset, iteration)
            scalars["time/analysis"] = time.perf_counter() - start
            self.logger.info("Evaluation pictures (test.analysis=%s) took %.1fs (%.0f%% of the evaluation's "
                             "%.1fs); they are in %s.", self.analysis, scalars["time/analysis"],
                             100 * scalars["time/analysis"] / max(took, 1e-9), took, self.pictures_dir(iteration))
        self.metrics = metrics
        return scalars, images

    @property
    def analysis(self) -> str:
        return analysis_mode(self.cfg.test.analysis)

    def is_final(self, iteration: int | None) -> bool:
        """A checkpoint's own evaluation (eval_only) or the one at train.max_iter. An early stop's
        last evaluation is only known as final afterwards: the engine then calls finish()."""
        return iteration is None or bool(self.cfg.eval_only) or iteration >= int(self.cfg.train.max_iter)

    def finish(self, iteration: int | None) -> None:
        """After training: with test.analysis=final, the pictures of the last evaluation when it
        was not known as final when it ran (an early stop). Its results file is still the latest."""
        if (not is_main_process() or self.analysis != "final" or self._evaluated_at != iteration
                or self.pictures_dir(iteration).is_dir()):
            return
        self._analyse(self.loader.dataset, iteration)
        self.logger.info("Evaluation pictures of the last evaluation (test.analysis=final) are in %s.",
                         self.pictures_dir(iteration))

    def iou_types(self, with_tta: bool) -> tuple[str, ...]:
        """("bbox", "segm") for a mask model, whose results carry an RLE per detection; ("bbox",
        "keypoints") for a keypoint model; ("bbox",) otherwise. Test-time augmentation merges
        boxes only, so its results have no masks (nor keypoints)."""
        if needs_keypoints(self.cfg):
            if with_tta:
                self.logger.warning("test.aug=true merges boxes only: the keypoints of this keypoint model are not "
                                    "evaluated; set test.aug=false for the keypoint metrics.")
                return ("bbox",)
            return ("bbox", "keypoints")
        if not needs_masks(self.cfg):
            return ("bbox",)
        if with_tta:
            self.logger.warning("test.aug=true merges boxes only: the masks of this mask model are not evaluated "
                                "(segm); set test.aug=false for the segm metrics.")
            return ("bbox",)
        return ("bbox", "segm")

    def pictures_dir(self, iteration: int | None) -> Path:
        return self.output_dir / "eval" / (str(iteration) if iteration is not None else "final")

    def _analyse(self, dataset, iteration: int | None) -> list[tuple[str, Any]]:
        """The error analysis of this evaluation's results file and the ground truth of the
        images evaluated, written to output_dir/eval/<iteration>/ (see eval_pictures.py)."""
        from detector.evaluation.eval_pictures import write_eval_pictures

        max_images = self.cfg.test.max_images
        records = dataset.records if max_images is None else dataset.records[: int(max_images)]
        gt = dataset.gt_dict
        if len(records) < len(dataset.records):
            kept = {int(r.image_id) for r in records}
            gt = {**gt, "images": [i for i in gt["images"] if int(i["id"]) in kept],
                  "annotations": [a for a in gt["annotations"] if int(a["image_id"]) in kept]}
        results = json.loads((self.output_dir / "inference" / "coco_instances_results.json").read_text())
        _, images = write_eval_pictures(
            gt, results, records, self.pictures_dir(iteration), float(self.cfg.test.vis_score_thresh),
            int(self.cfg.test.analysis_grid_images), backend=str(self.cfg.test.evaluator),
            max_image_pixels=getattr(dataset, "max_image_pixels", None))
        return images

    def _draw(self, samples, names: list[str]) -> list[tuple[str, Any]]:
        if not samples:
            return []
        from detector.utils.draw import draw_boxes

        threshold = float(self.cfg.test.vis_score_thresh)
        pictures = []
        for index, (image, boxes, labels, scores, *masks) in enumerate(samples):
            keep = scores >= threshold
            texts = [names[int(label) - 1] if 0 < int(label) <= len(names) else str(int(label)) for label in labels[keep]]
            # A mask model's samples carry its binary masks as a fifth item: drawn under the boxes.
            kept_masks = masks[0][keep] if masks else None
            pictures.append((f"predictions/{index}", draw_boxes(image, boxes[keep], texts, scores[keep],
                                                                masks=kept_masks)))
        return pictures


def write_model_summary(cfg: DictConfig, model: nn.Module, ctx: RunContext) -> dict[str, Any]:
    """Parameters and FLOPs at the test size (min_size_test x max_size_test: the largest
    input the eval resize produces), logged and written to output_dir/model_summary.json."""
    from detector.utils.model_summary import format_model_summary, model_summary

    size = (int(cfg.model.input.min_size_test), int(cfg.model.input.max_size_test))
    summary = model_summary(model, size)
    ctx.logger.info(format_model_summary(summary))
    (ctx.output_dir / "model_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def write_label_statistics(cfg: DictConfig, train_set, ctx: RunContext) -> list[tuple[str, Any]]:
    """output_dir/label_stats.png (boxes per class, sizes and aspect ratios against the
    anchors) and the same picture for TensorBoard."""
    from detector.data.label_statistics import plot_label_statistics
    from detector.modeling.anchor_generator import flat_anchor_sizes
    from detector.data.transforms import training_scales
    from detector.engine.run_summary import LABEL_STATS_PNG
    from detector.evaluation.eval_pictures import read_png_rgb

    min_sizes, max_size = training_scales(cfg.aug)
    # FCOS has points (model.points) where the anchor-based models have anchors; RetinaNet's
    # levels hold several sizes each (drawn all).
    anchors = cfg.model.points if "points" in cfg.model else cfg.model.anchor_generator
    sizes = flat_anchor_sizes(anchors.sizes, anchors.get("octave_scales"))
    path = plot_label_statistics(train_set.records, list(train_set.class_names), sizes,
                                 list(anchors.aspect_ratios), float(np.median(min_sizes)), float(max_size),
                                 ctx.output_dir / LABEL_STATS_PNG)
    ctx.logger.info("Label statistics of the training set: %s.", path)
    return [("data/label_stats", read_png_rgb(path))]


class DetectionTask(Task):
    """Faster R-CNN (or any model conf/model names) trained on a detection dataset, evaluated
    with COCO's box metrics -- and mask metrics (segm) for a mask model."""

    name = "detection"

    def __init__(self):
        self.train_set = None   # built by build_train_loader; its category ids go into the checkpoints

    def check_config(self, cfg: DictConfig) -> None:
        """The engine's checks, then detection's own (detector/tasks/detection_checks.py)."""
        from detector.tasks.detection_checks import check_detection_config

        super().check_config(cfg)
        check_detection_config(cfg)

    def resolve_classes(self, cfg: DictConfig, ctx: RunContext | None = None) -> list[str]:
        """model.class_names from the dataset when null; model.num_classes (by default
        ${dataset_num_classes:}, the dataset's count) resolved once and checked against them.
        A mask model on a dataset without instance masks fails here, before any building."""
        from detector.data import class_names, require_masks

        names = list(class_names(cfg))
        if needs_masks(cfg):
            require_masks(cfg)
        keypoints = None
        if needs_keypoints(cfg):
            from detector.data.keypoints import require_keypoints

            keypoints = require_keypoints(cfg)
        with open_dict(cfg):
            if keypoints is not None and cfg.model.roi_heads.keypoint_head.num_keypoints is None:
                # The dataset's keypoints, kept in the checkpoints as model.class_names is.
                head = cfg.model.roi_heads.keypoint_head
                head.num_keypoints = keypoints.count
                head.keypoint_names = list(keypoints.names)
                head.skeleton = [list(pair) for pair in keypoints.skeleton]
            if cfg.model.class_names is None:
                cfg.model.class_names = names
            # Resolved here once, and kept as a number: the resolver reads the annotations.
            cfg.model.num_classes = int(cfg.model.num_classes)
        if cfg.model.num_classes != len(cfg.model.class_names):
            raise ValueError(
                f"model.num_classes={cfg.model.num_classes} but the dataset has {len(names)} classes {names[:10]}; "
                "leave model.num_classes at its default (${dataset_num_classes:}) to take them from the dataset."
            )
        return names

    def build_train_loader(self, cfg: DictConfig, ctx: RunContext, start_iter: int):
        from detector.data import build_train_loader

        loader = build_train_loader(cfg, ctx.rank, ctx.world_size, start_iter=start_iter, with_masks=needs_masks(cfg),
                                    with_keypoints=needs_keypoints(cfg))
        self.train_set = loader.dataset
        return loader

    def checkpoint_extras(self, cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
        """The dataset's category id of each label 1..K: predictions outside a dataset
        (tools/predict.py) report them."""
        train_set = self.train_set
        return {"category_ids": [int(train_set.label_to_category_id[label])
                                 for label in range(1, len(train_set.class_names) + 1)]}

    def start_training(self, cfg: DictConfig, ctx: RunContext, run, train_loader) -> list[tuple[str, Any]]:
        """model_summary.json and the label statistics (rank 0)."""
        if not ctx.is_main:
            return []
        write_model_summary(cfg, run.core, ctx)
        return write_label_statistics(cfg, train_loader.dataset, ctx)

    def build_evaluator(self, cfg: DictConfig, model_for_eval, ctx: RunContext, precision) -> DetectionEvaluator:
        return DetectionEvaluator(cfg, model_for_eval, ctx.device, precision, ctx.output_dir, ctx.rank,
                                  ctx.world_size, ctx.logger)

    def validation_period(self, cfg: DictConfig) -> int:
        return int(cfg.train.val_loss_period)

    def build_validation_loader(self, cfg: DictConfig, ctx: RunContext):
        """The held-out images (detector.data.build.build_held_out_dataset) in training batches,
        through the data package's loader builder."""
        from detector.data.loader import build_held_out_loader

        return build_held_out_loader(cfg, ctx.rank, ctx.world_size, with_masks=needs_masks(cfg),
                                     with_keypoints=needs_keypoints(cfg))

    def build_step(self, cfg: DictConfig, ctx: RunContext) -> DetectionStep:
        return DetectionStep(ctx.device)
