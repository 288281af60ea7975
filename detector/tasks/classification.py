"""Image classification as a task of the engine (tools/train_cls.py): a ResNet classifier on
an ImageFolder (data.root/train/<class>/, data.root/test/<class>/). This module supplies only
what differs from detection: its config checks (classification_checks.py), the classes, the
data, the step (cross-entropy) and the evaluation (accuracies, confusion matrix). The model and
its starting weights come as for any task (Task.build_model, then the engine loads the
weights); the loop, checkpoints, resume, DDP, AMP, EMA, LR schedule and writers are the
engine's (detector/engine/run.py)."""
from __future__ import annotations

import json
import time
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict
from torch import nn

from detector.engine.config_checks import ConfigError
from detector.engine.context import RunContext, sync_from_rank0
from detector.engine.task import TestSetEvaluator, Task
from detector.utils.distributed import is_main_process

METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"


class ClassificationStep:
    """step_fn for the Trainer: a batch {"images", "labels"} -> {"loss_cls": cross-entropy}."""

    def __init__(self, device: torch.device, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0):
        self.device = device
        self.class_weights = None if class_weights is None else class_weights.to(device)
        self.label_smoothing = float(label_smoothing)

    def __call__(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["images"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        logits = model(images)
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        loss = F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.label_smoothing)
        return {"loss_cls": loss}


def validate_cls_config(cfg: DictConfig) -> None:
    """ConfigError for values of conf/cls.yaml that cannot work (ClassificationTask.check_config)."""
    ClassificationTask().check_config(cfg)


class ClassificationEvaluator(TestSetEvaluator):
    """eval_function for EvalHook: accuracies on the test split, the confusion matrix as a
    PNG and a TensorBoard picture, and output_dir/metrics.json (rank 0 writes)."""

    def build_loader(self):
        from detector.data.classification import build_cls_test_loader

        return build_cls_test_loader(self.cfg, self.rank, self.world_size)

    def __call__(self, iteration: int | None) -> tuple[dict[str, float], list[tuple[str, Any]]]:
        from detector.evaluation.classification import (
            confusion_matrix_picture,
            evaluate_classifier,
            format_report,
            save_picture,
        )

        model = self.model_for_eval()
        sync_from_rank0(model)
        start = time.perf_counter()
        class_names = list(self.loader.dataset.class_names)
        metrics = evaluate_classifier(model, self.loader, self.device, class_names, self.precision.dtype, self.logger)
        metrics = {"iteration": int(iteration or 0), **metrics}
        self.metrics = metrics
        self.logger.info("Evaluation at iteration %s (%.1fs):\n%s", iteration, time.perf_counter() - start,
                         format_report(metrics))
        scalars = {"cls/top1": metrics["top1"], f"cls/top{metrics['top5_k']}": metrics["top5"],
                   "cls/mean_class_accuracy": metrics["mean_class_accuracy"]}
        scalars.update({f"cls_per_class/{name}": value for name, value in metrics["per_class_accuracy"].items()
                        if value is not None})
        images = []
        if is_main_process():
            picture = confusion_matrix_picture(metrics["confusion_matrix"], class_names,
                                               title=f"Confusion matrix (iteration {iteration})")
            save_picture(picture, self.output_dir / CONFUSION_PNG)
            (self.output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
            images.append(("confusion_matrix", picture))
        return scalars, images


class ClassificationTask(Task):
    """A ResNet classifier (cls.yaml's model) on the class folders of data.root."""

    name = "classification"

    def __init__(self):
        self.train_set = None   # built by build_train_loader; its class counts weight the loss

    def check_config(self, cfg: DictConfig) -> None:
        """The engine's checks, then classification's own (detector/tasks/classification_checks.py)."""
        from detector.tasks.classification_checks import check_classification_config

        super().check_config(cfg)
        check_classification_config(cfg)

    def resolve_classes(self, cfg: DictConfig, ctx: RunContext | None = None) -> list[str]:
        """model.class_names / num_classes from the training folders when null, checked
        against them when set (a checkpoint's, or the command line's)."""
        from detector.data.classification import cls_class_names

        names = cls_class_names(cfg)
        with open_dict(cfg):
            if cfg.model.class_names is None:
                cfg.model.class_names = names
            if cfg.model.num_classes is None:
                cfg.model.num_classes = len(names)
        if list(cfg.model.class_names) != names or int(cfg.model.num_classes) != len(names):
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} / model.class_names={list(cfg.model.class_names)[:10]} do not "
                f"match the class folders of {cfg.data.root}/{cfg.data.train_dir}: {names[:10]}; leave them null to take "
                "them from the data."
            )
        return names

    def build_train_loader(self, cfg: DictConfig, ctx: RunContext, start_iter: int):
        from detector.data.classification import build_cls_dataset, build_cls_train_loader

        self.train_set = build_cls_dataset(cfg, "train")
        counts = self.train_set.class_counts()
        ctx.logger.info("Training images per class: %s.", dict(zip(self.train_set.class_names, counts.tolist())))
        return build_cls_train_loader(cfg, ctx.rank, ctx.world_size, start_iter=start_iter, dataset=self.train_set)

    def build_evaluator(self, cfg: DictConfig, model_for_eval, ctx: RunContext, precision) -> ClassificationEvaluator:
        return ClassificationEvaluator(cfg, model_for_eval, ctx.device, precision, ctx.output_dir, ctx.rank,
                                       ctx.world_size, ctx.logger)

    def build_step(self, cfg: DictConfig, ctx: RunContext) -> ClassificationStep:
        """Cross-entropy, class-weighted with data.balance=loss (weights from the training set's counts)."""
        from detector.data.class_balance import class_loss_weights

        class_weights = None
        if str(cfg.data.balance) == "loss":
            names = self.train_set.class_names
            weights = class_loss_weights(self.train_set.class_counts(), float(cfg.data.balance_strength))
            class_weights = torch.tensor(weights, dtype=torch.float32)
            ctx.logger.info("Loss weights per class: %s.", {n: round(float(w), 3) for n, w in zip(names, weights)})
        return ClassificationStep(ctx.device, class_weights, float(cfg.loss.label_smoothing))
