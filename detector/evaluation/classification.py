"""Classification metrics: top-1, top-5, per-class accuracy, confusion matrix (and its picture).

With imbalanced classes top-1 mostly measures the largest class, so the mean of the
per-class accuracies (balanced accuracy) is reported next to it. Top-5 needs more than
five classes to mean anything: with K <= 5 classes it is computed as top-K (always 1.0)
and `top5_k` in the metrics says which k was used.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from detector.utils.distributed import broadcast_from_main, gather_to_main, is_main_process

TOP5 = 5


def classification_metrics(labels: np.ndarray, topk: np.ndarray, class_names: Sequence[str]) -> dict:
    """Metrics from true labels [N] and the top-k predicted labels [N, k] (best first).

    Returns fractions in [0, 1]: top1, top5 (top-min(5, K)), mean_class_accuracy (over the
    classes that have test samples), per_class_accuracy (None for classes without samples),
    plus confusion_matrix (rows: true class, columns: predicted) and counts."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    topk = np.asarray(topk, dtype=np.int64).reshape(len(labels), -1)
    num_classes = len(class_names)
    if len(labels) == 0:
        raise ValueError("no test samples to evaluate (is the test folder empty, or were all images unreadable?)")
    k5 = min(TOP5, num_classes)
    if topk.shape[1] < k5:
        raise ValueError(f"need the top-{k5} predictions per sample, got {topk.shape[1]}")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, topk[:, 0]), 1)
    support = confusion.sum(axis=1)
    per_class = {
        str(name): (float(confusion[i, i] / support[i]) if support[i] > 0 else None)
        for i, name in enumerate(class_names)
    }
    present = [v for v in per_class.values() if v is not None]
    return {
        "top1": float((topk[:, 0] == labels).mean()),
        "top5": float((topk[:, :k5] == labels[:, None]).any(axis=1).mean()),
        "top5_k": k5,
        "mean_class_accuracy": float(np.mean(present)),
        "per_class_accuracy": per_class,
        "support": {str(name): int(n) for name, n in zip(class_names, support)},
        "num_samples": int(len(labels)),
        "class_names": [str(n) for n in class_names],
        "confusion_matrix": confusion.tolist(),
    }


def confusion_matrix_picture(confusion: Sequence[Sequence[int]], class_names: Sequence[str],
                             title: str = "Confusion matrix") -> np.ndarray:
    """The confusion matrix drawn with matplotlib as an HxWx3 uint8 array. Cells are
    coloured by row fraction (recall), so small classes stay readable next to large ones;
    counts are written in the cells when there are few enough classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion, dtype=np.float64)
    num = len(class_names)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(20.0, max(4.0, 0.45 * num + 2.5))
    figure, axis = plt.subplots(figsize=(side, side), dpi=100)
    try:
        axis.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
        axis.set_xticks(range(num))
        axis.set_yticks(range(num))
        font = 9 if num <= 20 else 5
        axis.set_xticklabels(class_names, rotation=90, fontsize=font)
        axis.set_yticklabels(class_names, fontsize=font)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(title)
        if num <= 30:
            for i in range(num):
                for j in range(num):
                    if matrix[i, j]:
                        axis.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=font,
                                  color="white" if rows[i, j] > 0.5 else "black")
        figure.tight_layout()
        figure.canvas.draw()
        picture = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(figure)
    return picture


def save_picture(picture: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


@torch.no_grad()
def predict_topk(model: nn.Module, loader, device: torch.device, k: int,
                 autocast_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels [N], top-k predictions [N, k], skipped messages) over this process's loader."""
    model.eval()
    labels, predictions, skipped = [], [], []
    for batch in loader:
        skipped.extend(batch.get("skipped", ()))
        if len(batch["labels"]) == 0:
            continue
        images = batch["images"].to(device, non_blocking=True)
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                logits = model(images)
        else:
            logits = model(images)
        predictions.append(logits.float().topk(k, dim=1).indices.cpu().numpy())
        labels.append(batch["labels"].numpy())
    if not labels:
        return np.zeros(0, np.int64), np.zeros((0, k), np.int64), skipped
    return np.concatenate(labels), np.concatenate(predictions), skipped


def evaluate_classifier(model: nn.Module, loader, device: torch.device, class_names: Sequence[str],
                        autocast_dtype: torch.dtype | None = None, log: logging.Logger | None = None) -> dict:
    """Run the (sharded) test loader on every process and compute the metrics of the whole
    test set; every process returns the same dict."""
    log = log or logging.getLogger("detector")
    k = min(TOP5, len(class_names))
    labels, topk, skipped = predict_topk(model, loader, device, k, autocast_dtype)
    gathered = gather_to_main((labels, topk, skipped))
    metrics = None
    if is_main_process():
        all_labels = np.concatenate([g[0] for g in gathered])
        all_topk = np.concatenate([g[1] for g in gathered])
        all_skipped = [m for g in gathered for m in g[2]]
        metrics = classification_metrics(all_labels, all_topk, class_names)
        metrics["skipped_images"] = len(all_skipped)
        if all_skipped:
            log.warning("%d unreadable test image(s) left out of the evaluation, e.g. %s", len(all_skipped), all_skipped[0])
    return broadcast_from_main(metrics)


def format_report(metrics: dict) -> str:
    """A printable table: overall figures, then accuracy and support per class."""
    k = metrics.get("top5_k", TOP5)
    lines = [
        f"top-1 {metrics['top1']:.4f}   top-{k} {metrics['top5']:.4f}   mean class accuracy "
        f"{metrics['mean_class_accuracy']:.4f}   ({metrics['num_samples']} test images)",
    ]
    width = max(len(n) for n in metrics["per_class_accuracy"]) if metrics["per_class_accuracy"] else 5
    lines.append(f"{'class':<{width}}  accuracy  support")
    for name, accuracy in metrics["per_class_accuracy"].items():
        shown = "     n/a" if accuracy is None else f"{accuracy:8.4f}"
        lines.append(f"{name:<{width}}  {shown}  {metrics['support'][name]:7d}")
    return "\n".join(lines)
