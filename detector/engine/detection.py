"""Training and evaluating a detector from the config: the wiring behind tools/train_net.py.

Everything detection-specific lives here -- how a batch reaches the model, how the test
set is evaluated, what is drawn -- while the loop itself (trainer.py) stays generic.
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from detector.weights.checkpoint_io import load_checkpoint
from detector.engine.config_checks import check_output_dir
from detector.engine.launch import select_device
from detector.engine.precision import Precision, resolve_precision
from detector.evaluation import STAT_NAMES, evaluate_detector
from detector.utils.distributed import (adopt_slurm_environment, barrier, get_world_size, init_distributed,
                                        is_distributed, is_main_process)
from detector.utils.logger import setup_logger


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class DetectionStep:
    """Moves a batch to the device and returns the model's loss dict."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        images = [image.to(self.device, non_blocking=True) for image in batch["images"]]
        targets = [
            {"boxes": t["boxes"].to(self.device, non_blocking=True), "labels": t["labels"].to(self.device, non_blocking=True)}
            for t in batch["targets"]
        ]
        return model(images, targets)


def fill_classes(cfg: DictConfig) -> None:
    """model.num_classes / class_names from the dataset, when the config leaves them null.

    Rank 0 goes first: reading the classes may generate the shapes dataset, which two
    processes must not write at once.
    """
    if cfg.model.get("num_classes") is not None and cfg.model.get("class_names") is not None:
        return
    from detector.data import class_names

    names = None
    if is_main_process():
        names = list(class_names(cfg))
    barrier()
    if names is None:
        names = list(class_names(cfg))
    OmegaConf.set_struct(cfg, False)
    if cfg.model.get("num_classes") is None:
        cfg.model.num_classes = len(names)
    if cfg.model.get("class_names") is None:
        cfg.model.class_names = names
    OmegaConf.set_struct(cfg, True)
    if cfg.model.num_classes != len(cfg.model.class_names):
        raise ValueError(
            f"model.num_classes={cfg.model.num_classes} but the dataset has {len(names)} classes {names[:10]}; "
            "leave model.num_classes=null to take them from the dataset."
        )


def build_eval_loader(cfg: DictConfig, rank: int, world_size: int):
    """The sharded test loader; with test.max_images, only the first N test images."""
    from detector.data import build_test_loader

    max_images = cfg.test.get("max_images")
    if max_images is None:
        return build_test_loader(cfg, rank, world_size)
    from torch.utils.data import DataLoader

    from detector.data.loader import collate_test
    from detector.data.samplers import InferenceBatchSampler

    full = build_test_loader(cfg, rank, world_size)
    sampler = InferenceBatchSampler(min(int(max_images), len(full.dataset)), int(cfg.dataloader.test_batch_size), rank, world_size)
    return DataLoader(full.dataset, batch_sampler=sampler, collate_fn=collate_test, num_workers=0)


def sync_from_rank0(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank. Under DDP each rank's BatchNorm
    running statistics last saw its own batch; evaluating with rank 0's (those written to
    the checkpoint) makes distributed evaluation equal the checkpoint's evaluation."""
    if not is_distributed() or get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(model.state_dict().values()):
            dist.broadcast(tensor, src=0)


class DetectionEvaluator:
    """eval_function for EvalHook: run, gather, evaluate, write, draw."""

    def __init__(self, cfg: DictConfig, model_for_eval, device: torch.device, precision: Precision,
                 output_dir: Path, rank: int, world_size: int, logger: logging.Logger):
        self.cfg = cfg
        self.model_for_eval = model_for_eval
        self.device = device
        self.precision = precision
        self.output_dir = output_dir
        self.rank, self.world_size = rank, world_size
        self.logger = logger
        self._loader = None

    @property
    def loader(self):
        if self._loader is None:
            self._loader = build_eval_loader(self.cfg, self.rank, self.world_size)
        return self._loader

    def __call__(self, iteration: int | None) -> tuple[dict[str, float], list[tuple[str, Any]]]:
        model = self.model_for_eval()
        sync_from_rank0(model)
        from detector.evaluation.tta import build_tta

        tta = build_tta(self.cfg, model)  # the model itself unless test.aug=true
        if tta is not model:
            self.logger.info("Test-time augmentation: %d views (scales %s x test size%s), merged by %s.",
                             tta.num_views, tta.scales, ", each also mirrored" if tta.flip else "", tta.merge)
        model = tta
        dataset = self.loader.dataset
        num_samples = int(self.cfg.train.vis_period_images) if is_main_process() else 0
        start = time.perf_counter()
        metrics, samples = evaluate_detector(
            model, self.loader, dataset.coco_gt, dataset.label_to_category_id, self.device,
            output_dir=self.output_dir if is_main_process() else None, iteration=iteration,
            backend=str(self.cfg.test.evaluator), autocast_dtype=self.precision.dtype,
            num_samples=num_samples, log=self.logger,
        )
        took = time.perf_counter() - start
        self.logger.info("Evaluation took %.1fs.", took)
        # Undefined numbers (None) are kept: metrics.jsonl and results.csv show every column;
        # the hooks put only the defined ones in TensorBoard.
        scalars = {f"bbox/{name}": metrics.get(name) for name in STAT_NAMES}
        scalars.update({f"bbox_per_category/{name}": ap for name, ap in metrics["per_category"].items()})
        scalars["time/evaluation"] = took
        images = self._draw(samples, list(dataset.class_names))
        if is_main_process() and bool(self.cfg.test.analysis):
            start = time.perf_counter()
            images += self._analyse(dataset, iteration)
            scalars["time/analysis"] = time.perf_counter() - start
            self.logger.info("Evaluation pictures (test.analysis=true) took %.1fs (%.0f%% of the evaluation's "
                             "%.1fs); they are in %s.", scalars["time/analysis"],
                             100 * scalars["time/analysis"] / max(took, 1e-9), took, self.pictures_dir(iteration))
        self.metrics = metrics
        return scalars, images

    def pictures_dir(self, iteration: int | None) -> Path:
        return self.output_dir / "eval" / (str(iteration) if iteration is not None else "final")

    def _analyse(self, dataset, iteration: int | None) -> list[tuple[str, Any]]:
        """The error analysis of this evaluation's results file and the ground truth of the
        images evaluated, written to output_dir/eval/<iteration>/ (see eval_pictures.py)."""
        import json

        from detector.evaluation.eval_pictures import write_eval_pictures

        max_images = self.cfg.test.get("max_images")
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
        for index, (image, boxes, labels, scores) in enumerate(samples):
            keep = scores >= threshold
            texts = [names[int(label) - 1] if 0 < int(label) <= len(names) else str(int(label)) for label in labels[keep]]
            pictures.append((f"predictions/{index}", draw_boxes(image, boxes[keep], texts, scores[keep])))
        return pictures


def _resolved_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def _checkpoint_iteration(path: str) -> int | None:
    """The iteration a checkpoint was written at (None for bare weights)."""
    from detector.weights.zoo import resolve_weights

    path = str(resolve_weights(path))
    if path.endswith(".safetensors"):
        return None
    return load_checkpoint(path).get("iteration")


class RunContext:
    """Device, process group, output folder and logger of one run (every rank)."""

    def __init__(self, cfg: DictConfig):
        import os

        adopt_slurm_environment()  # srun tasks (SLURM, submitit) name their local rank like torchrun
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = select_device(str(cfg.train.device), local_rank)
        self.rank, self.world_size, _ = init_distributed(self.device.type, float(cfg.train.get("dist_timeout_s", 600)))
        self.output_dir = Path(str(cfg.output_dir)).absolute()
        if self.rank == 0:
            check_output_dir(self.output_dir)
        self.logger = setup_logger(self.output_dir, self.rank)
        if self.world_size > 1:
            self.logger.info("Process group: %d processes (%s), this is rank %d.", self.world_size,
                             dist.get_backend(), self.rank)


def prepare(cfg: DictConfig) -> tuple[RunContext, nn.Module]:
    """Context, classes, config.yaml and the model, identically initialised on every rank."""
    ctx = RunContext(cfg)
    fill_classes(cfg)
    if is_main_process():
        OmegaConf.save(cfg, ctx.output_dir / "config.yaml", resolve=True)
    seed_everything(int(cfg.seed))
    from detector.modeling.build import build_model

    model = build_model(cfg)
    return ctx, model


def adopt_checkpoint_architecture(cfg: DictConfig, model_overrides: list[str]) -> None:
    """eval_only: a checkpoint that carries its config (a converted torchvision/Detectron2
    model, or one trained under another schedule) is rebuilt as it was trained, not as the
    command line's schedule would shape it; `model.*`/`backbone.*` overrides given on the
    command line (e.g. model.roi_heads.score_thresh=0.3) still apply on top."""
    from detector.weights.checkpoint_io import load_checkpoint
    from detector.modeling.build import config_from_checkpoint
    from detector.weights.zoo import resolve_weights

    path = str(resolve_weights(cfg.model.weights, expect="detector"))   # a published name: its conversion
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint.get("config"), dict):
        return
    own = config_from_checkpoint(checkpoint, path, overrides=model_overrides)
    with open_dict(cfg):
        weights = cfg.model.weights
        cfg.backbone = own.backbone
        cfg.model = own.model
        cfg.model.weights = weights
        cfg.backbone.weights = None


def evaluate_checkpoint(cfg: DictConfig, model_overrides: list[str] | None = None) -> dict[str, Any]:
    """eval_only: the metrics of cfg.model.weights on the test set (also written to output_dir)."""
    adopt_checkpoint_architecture(cfg, list(model_overrides or []))
    ctx, model = prepare(cfg)  # build_model loads cfg.model.weights, strictly
    iteration = _checkpoint_iteration(str(cfg.model.weights))
    model.to(ctx.device).eval()
    precision = resolve_precision(str(cfg.train.amp), ctx.device)
    evaluator = DetectionEvaluator(cfg, lambda: model, ctx.device, precision, ctx.output_dir, ctx.rank, ctx.world_size, ctx.logger)
    scalars, images = evaluator(iteration)
    from detector.engine.training_run import log_evaluation

    log_evaluation(ctx.output_dir, iteration, scalars, images)
    return evaluator.metrics


def write_model_summary(cfg: DictConfig, model: nn.Module, ctx: RunContext) -> dict[str, Any]:
    """Parameters and FLOPs at the test size (min_size_test x max_size_test: the largest
    input the eval resize produces), logged and written to output_dir/model_summary.json."""
    import json

    from detector.utils.model_summary import format_model_summary, model_summary

    size = (int(cfg.model.input.min_size_test), int(cfg.model.input.max_size_test))
    summary = model_summary(model, size)
    ctx.logger.info(format_model_summary(summary))
    (ctx.output_dir / "model_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def train_detector(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume), evaluate periodically and at the end; returns the final metrics."""
    from detector.data import build_train_loader
    from detector.engine.training_run import prepare_training, run_training

    ctx, model = prepare(cfg)  # cfg.model.weights (initial weights) are loaded here; a resume overrides them
    run = prepare_training(cfg, ctx, model, seed_everything)
    if is_main_process():
        write_model_summary(cfg, run.core, ctx)
    accum = int(cfg.train.grad_accum_steps)
    train_loader = build_train_loader(cfg, ctx.rank, ctx.world_size, start_iter=run.start_iter * accum)
    # Predictions outside a dataset (tools/predict.py) report the dataset's own category ids.
    train_set = train_loader.dataset
    run.checkpointer.extra["category_ids"] = [
        int(train_set.label_to_category_id[label]) for label in range(1, len(train_set.class_names) + 1)
    ]
    start_images = write_label_statistics(cfg, train_set, ctx) if is_main_process() else []
    evaluator = DetectionEvaluator(cfg, run.eval_model, ctx.device, run.precision, ctx.output_dir, ctx.rank,
                                   ctx.world_size, ctx.logger)
    from detector.engine.validation_loss import build_validation_loss_hook

    val_loss = build_validation_loss_hook(cfg, run.core, ctx.device, run.precision, ctx.rank, ctx.world_size, ctx.logger)
    return run_training(cfg, ctx, run, train_loader, DetectionStep(ctx.device), evaluator,
                        extra_hooks=[val_loss] if val_loss is not None else [], start_images=start_images)


def write_label_statistics(cfg: DictConfig, train_set, ctx: RunContext) -> list[tuple[str, Any]]:
    """output_dir/label_stats.png (boxes per class, sizes and aspect ratios against the
    anchors) and the same picture for TensorBoard."""
    from detector.data.label_statistics import plot_label_statistics
    from detector.engine.run_summary import LABEL_STATS_PNG
    from detector.evaluation.eval_pictures import read_png_rgb

    min_sizes = list(cfg.aug.train.min_size) if OmegaConf.is_list(cfg.aug.train.min_size) else [cfg.aug.train.min_size]
    anchors = cfg.model.anchor_generator
    path = plot_label_statistics(train_set.records, list(train_set.class_names), list(anchors.sizes),
                                 list(anchors.aspect_ratios), float(np.median(min_sizes)), float(cfg.aug.train.max_size),
                                 ctx.output_dir / LABEL_STATS_PNG)
    ctx.logger.info("Label statistics of the training set: %s.", path)
    return [("data/label_stats", read_png_rgb(path))]
