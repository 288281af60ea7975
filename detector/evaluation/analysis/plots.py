"""The analysis pictures (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from detector.evaluation.analysis.errors import ERROR_KINDS, FP_KINDS  # noqa: E402

PLOT_FILES = {
    "errors": "error_breakdown.png",
    "confusion": "confusion_matrix.png",
    "pr_curves": "pr_curves.png",
    "sizes": "size_breakdown.png",
}
_ERROR_COLORS = {"cls": "#e6194b", "loc": "#f58231", "both": "#911eb4", "dupe": "#4363d8", "bkg": "#3cb44b",
                 "missed": "#808080", "covered": "#c8c8c8", "tp": "#2a9d8f"}


def _save(figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def plot_errors(analysis: dict, path: Path) -> str:
    """dAP per error kind (left) and how many of each (right)."""
    errors = analysis["errors"]
    names = list(ERROR_KINDS)
    colors = [_ERROR_COLORS[k] for k in names]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    daps = [100 * (errors[k]["dap"] or 0.0) for k in names]
    left.bar(names, daps, color=colors)
    left.set_ylabel(f"dAP (points of {analysis['settings']['ap_name']})")
    left.set_title(f"AP gained by fixing each error kind (base {analysis['settings']['ap_name']} "
                   f"{100 * (analysis.get('dap_base_ap', analysis['base_ap']) or 0):.1f})", fontsize=10)
    for x, value in enumerate(daps):
        left.text(x, value, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    counts = [errors[k]["count"] for k in names]
    right.bar(names, counts, color=colors)
    right.set_ylabel("count")
    right.set_title("errors (missed: objects; the rest: detections)", fontsize=10)
    return _save(figure, path)


def plot_confusion(analysis: dict, path: Path) -> str:
    confusion = analysis["confusion_matrix"]
    matrix = np.asarray(confusion["matrix"], dtype=np.float64)
    labels = confusion["labels"]
    size = max(5.0, min(24.0, 0.28 * len(labels) + 3))
    figure, axis = plt.subplots(figsize=(size, size))
    # Log scale: the diagonal dwarfs the confusions that the picture is for.
    image = axis.imshow(np.log1p(matrix), cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7 if len(labels) > 20 else 9)
    axis.set_yticks(range(len(labels)), labels, fontsize=7 if len(labels) > 20 else 9)
    axis.set_xlabel("prediction")
    axis.set_ylabel("ground truth")
    axis.set_title(f"confusion matrix (IoU >= {confusion['iou']}, score >= {confusion['score_thresh']})")
    if len(labels) <= 25:
        for (row, col), value in np.ndenumerate(matrix):
            if value:
                axis.text(col, row, str(int(value)), ha="center", va="center", fontsize=8,
                          color="white" if value > matrix.max() / 2 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="log(1 + count)")
    return _save(figure, path)


def plot_pr_curves(analysis: dict, path: Path) -> str:
    """One small panel per class with ground truth: precision vs recall at IoU 0.50 and 0.75.

    The panels are drawn into a single axes (offset copies of the unit square): with 80
    classes, 80 matplotlib axes would take ten times longer to lay out and render."""
    recall = np.asarray(analysis["pr_curves"]["recall"])
    curves = analysis["pr_curves"]["curves"]
    ap_name = analysis["settings"]["ap_name"]
    per_class = {row["name"]: row for row in analysis["per_class"]}
    names = list(curves)
    columns = max(1, min(6, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    step_x, step_y = 1.25, 1.4
    figure, axis = plt.subplots(figsize=(2.4 * columns, 2.2 * rows + 0.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, name in enumerate(names):
        x0, y0 = (n % columns) * step_x, -(n // columns) * step_y
        axis.plot([x0, x0 + 1, x0 + 1, x0, x0], [y0, y0, y0 + 1, y0 + 1, y0], color="0.6", linewidth=0.6)
        axis.plot([x0, x0 + 1], [y0 + 0.5, y0 + 0.5], color="0.85", linewidth=0.5)
        axis.plot([x0 + 0.5, x0 + 0.5], [y0, y0 + 1], color="0.85", linewidth=0.5)
        for color, (iou, precision) in zip(colors, curves[name].items()):
            label = f"IoU {iou}" if n == 0 else None
            axis.plot(x0 + recall, y0 + np.clip(np.asarray(precision), 0, None), color=color, linewidth=1, label=label)
        ap = per_class.get(name, {}).get(ap_name)
        title = f"{name} ({ap_name} {100 * ap:.1f})" if ap is not None else name
        axis.text(x0 + 0.5, y0 + 1.05, title, ha="center", va="bottom", fontsize=8)
    if not names:
        axis.text(0.5, 0.5, "no class has ground truth", ha="center")
    axis.set_xlim(-0.1, (columns - 1) * step_x + 1.1)
    axis.set_ylim(-(rows - 1) * step_y - 0.1, 1.25)
    axis.axis("off")
    axis.set_title("precision (y, 0..1) vs recall (x, 0..1) per class; grid lines at 0.5", fontsize=9)
    if names:
        axis.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 1.0 + 0.3 / (2.2 * rows)))
    return _save(figure, path)


def plot_sizes(analysis: dict, path: Path) -> str:
    """AP per size (left) and the outcome of every object / detection per size (right)."""
    sizes = analysis["sizes"]
    names = list(sizes)
    ap_name = analysis["settings"]["ap_name"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(names))
    for offset, key in ((-0.2, "AP"), (0.2, ap_name)):
        values = [100 * (sizes[n][key] or 0.0) for n in names]
        left.bar(x + offset, values, width=0.4, label=key)
    left.set_xticks(x, names)
    left.set_ylabel("AP (%)")
    left.set_title("AP by object size", fontsize=10)
    left.legend(fontsize=8)
    bottom = np.zeros(len(names))
    for kind in ("tp",) + FP_KINDS + ("missed", "covered"):
        values = np.array([sizes[n][kind] for n in names], dtype=np.float64)
        right.bar(x, values, bottom=bottom, color=_ERROR_COLORS[kind], label=kind)
        bottom += values
    right.set_xticks(x, names)
    right.set_ylabel("count")
    right.set_title("true positives and errors by size", fontsize=10)
    right.legend(fontsize=7, ncol=2)
    return _save(figure, path)


def write_plots(analysis: dict, output_dir: Path) -> dict[str, str]:
    """Write every picture; returns {key: file name} (names relative to output_dir)."""
    output_dir = Path(output_dir)
    writers = {"errors": plot_errors, "confusion": plot_confusion, "pr_curves": plot_pr_curves, "sizes": plot_sizes}
    return {key: writer(analysis, output_dir / PLOT_FILES[key]) for key, writer in writers.items()}
