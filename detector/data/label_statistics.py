"""The label-statistics picture written at the start of training: boxes per class, box
sizes and aspect ratios of the training set against the anchors.

Sizes are those the model sees: each image rescaled as the training augmentation does
(shortest edge to the middle of aug.min_size, longest edge at most
aug.max_size), so the box sizes and the anchor sizes are on the same scale. Boxes
far outside the anchor sizes, or aspect ratios far from the anchors', are hard for the
region proposal network to match.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_scale(width: int, height: int, min_size: float, max_size: float) -> float:
    """The factor the training resize applies to an image of this size."""
    scale = min_size / max(1, min(width, height))
    return min(scale, max_size / max(1, max(width, height)))


def box_statistics(records: Sequence, min_size: float, max_size: float) -> dict[str, np.ndarray]:
    """labels, sqrt(area) in model-input pixels and aspect ratio (height / width, as the
    anchor generator defines it) of every training box."""
    labels, sizes, ratios = [], [], []
    for record in records:
        boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            continue
        scale = training_scale(record.width, record.height, min_size, max_size)
        widths = np.clip(boxes[:, 2] - boxes[:, 0], 1e-6, None)
        heights = np.clip(boxes[:, 3] - boxes[:, 1], 1e-6, None)
        labels.append(np.asarray(record.labels, dtype=np.int64).reshape(-1))
        sizes.append(np.sqrt(widths * heights) * scale)
        ratios.append(heights / widths)
    if not labels:
        empty = np.zeros(0)
        return {"labels": empty.astype(np.int64), "sizes": empty, "ratios": empty}
    return {"labels": np.concatenate(labels), "sizes": np.concatenate(sizes), "ratios": np.concatenate(ratios)}


def plot_label_statistics(records: Sequence, class_names: Sequence[str], anchor_sizes: Sequence[float],
                          aspect_ratios: Sequence[float], min_size: float, max_size: float,
                          path: str | Path) -> Path:
    """Write the three-panel picture to `path` (PNG)."""
    stats = box_statistics(records, min_size, max_size)
    figure, (counts_axis, size_axis, ratio_axis) = plt.subplots(1, 3, figsize=(15, 4.2))

    counts = np.bincount(stats["labels"], minlength=len(class_names) + 1)[1: len(class_names) + 1]
    x = np.arange(len(class_names))
    counts_axis.bar(x, counts, color="#4363d8")
    counts_axis.set_xticks(x, class_names, rotation=90 if len(class_names) > 8 else 0,
                           fontsize=6 if len(class_names) > 30 else 8)
    counts_axis.set_ylabel("boxes")
    counts_axis.set_title(f"boxes per class ({int(counts.sum())} in {len(records)} training images)", fontsize=10)

    sizes = stats["sizes"]
    low = max(1.0, min([*anchor_sizes, *(sizes.tolist() or [1.0])]) / 1.5)
    high = max([*anchor_sizes, *(sizes.tolist() or [1.0])]) * 1.5
    bins = np.geomspace(low, high, 40)
    if len(sizes):
        size_axis.hist(sizes, bins=bins, color="#3cb44b")
    size_axis.set_xscale("log")
    for n, size in enumerate(anchor_sizes):
        size_axis.axvline(size, color="#e6194b", linestyle="--", linewidth=1, label="anchor sizes" if n == 0 else None)
    size_axis.set_xlabel(f"sqrt(box area), px at the training size (shortest edge {min_size:g}, max {max_size:g})")
    size_axis.set_ylabel("boxes")
    size_axis.set_title("box sizes against the anchor sizes", fontsize=10)
    size_axis.legend(fontsize=8)

    ratios = stats["ratios"]
    extent = max([4.0, *[r * 2 for r in aspect_ratios], *[2 / r for r in aspect_ratios]])
    if len(ratios):
        extent = max(extent, float(np.max(ratios)) * 1.2, 1.2 / max(float(np.min(ratios)), 1e-3))
    ratio_axis.hist(np.clip(ratios, 1 / extent, extent) if len(ratios) else ratios,
                    bins=np.geomspace(1 / extent, extent, 40), color="#911eb4")
    ratio_axis.set_xscale("log")
    ticks = [t for t in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8) if 1 / extent <= t <= extent]
    ratio_axis.set_xticks(ticks, [f"{t:g}" if t >= 1 else f"1/{1 / t:g}" for t in ticks])
    ratio_axis.minorticks_off()
    for n, ratio in enumerate(aspect_ratios):
        ratio_axis.axvline(ratio, color="#e6194b", linestyle="--", linewidth=1,
                           label="anchor aspect ratios" if n == 0 else None)
    ratio_axis.set_xlabel("aspect ratio (height / width)")
    ratio_axis.set_ylabel("boxes")
    ratio_axis.set_title("box aspect ratios against the anchors'", fontsize=10)
    ratio_axis.legend(fontsize=8)

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
