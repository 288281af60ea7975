"""The pictures of one evaluation, in output_dir/eval/<iteration>/ and for TensorBoard.

The error analysis of tools/analyze.py (detector/evaluation/analysis/) runs on the
evaluation's own results: PR curves per class at IoU 0.5 and 0.75, the confusion matrix,
the TIDE error breakdown, AP per object size, with its summary.md and analysis.json. One
more picture is drawn here: a grid of test images with the ground truth (green) and the
predictions (red), half of them the first test images (the same ones at every
evaluation, to follow), half the images with the lowest recall.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

GRID_FILE = "gt_vs_predictions.png"
GT_COLOUR = (0, 200, 0)
PRED_COLOUR = (230, 40, 40)
TILE = 320  # px: each image is fitted into a TILE x TILE square of the grid


def _tile(image: np.ndarray, caption: str) -> np.ndarray:
    height, width = image.shape[:2]
    scale = TILE / max(height, width)
    resized = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    tile = np.full((resized.shape[0] + 18, TILE, 3), 255, dtype=np.uint8)
    tile[: resized.shape[0], : resized.shape[1]] = resized
    cv2.putText(tile, caption, (3, resized.shape[0] + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _same_height(tiles: list[np.ndarray]) -> list[np.ndarray]:
    """Pad tiles at the bottom to the tallest one (landscape images leave no gap above their caption)."""
    height = max(t.shape[0] for t in tiles)
    return [np.concatenate([t, np.full((height - t.shape[0], TILE, 3), 255, dtype=np.uint8)]) if t.shape[0] < height
            else t for t in tiles]


def _xyxy(xywh: Sequence[float]) -> list[float]:
    x, y, w, h = xywh
    return [x, y, x + w, y + h]


def draw_grid(records: Sequence[Any], gt: dict, results: list[dict], recall: dict[int, dict], score_thresh: float,
              max_image_pixels: int, columns: int = 4) -> np.ndarray | None:
    """A grid of `records` (objects with image_id, path, width, height), each image with
    its ground truth in green and its predictions (score >= score_thresh) in red. Images
    that cannot be read are left out."""
    from detector.data.image_io import BadImageError, read_image_rgb
    from detector.utils.draw import draw_boxes

    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
    gt_by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        gt_by_image.setdefault(int(ann["image_id"]), []).append(ann)
    pred_by_image: dict[int, list[dict]] = {}
    for det in results:
        if float(det["score"]) >= score_thresh:
            pred_by_image.setdefault(int(det["image_id"]), []).append(det)
    tiles = []
    for record in records:
        try:
            image = read_image_rgb(record.path, (record.width, record.height), max_image_pixels)
        except BadImageError:
            continue
        anns = gt_by_image.get(int(record.image_id), [])
        image = draw_boxes(image, [_xyxy(a["bbox"]) for a in anns], [names[int(a["category_id"])] for a in anns],
                           colour=GT_COLOUR)
        dets = pred_by_image.get(int(record.image_id), [])
        image = draw_boxes(image, [_xyxy(d["bbox"]) for d in dets], [names[int(d["category_id"])] for d in dets],
                           [d["score"] for d in dets], colour=PRED_COLOUR)
        row = recall.get(int(record.image_id))
        found = f"recall {row['matched']}/{row['objects']}" if row and row["objects"] else "no objects"
        tiles.append(_tile(image, f"image {record.image_id}: {found}; green: truth, red: predicted"))
    if not tiles:
        return None
    tiles = _same_height(tiles)
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (rows * columns - len(tiles))
    return np.concatenate([np.concatenate(tiles[r * columns:(r + 1) * columns], axis=1) for r in range(rows)], axis=0)


def grid_records(records: Sequence[Any], per_image: list[dict], count: int) -> list[Any]:
    """The first count//2 images, then the worst (lowest recall) up to `count` in all."""
    from detector.evaluation.analysis.per_image import worst_images

    by_id = {int(r.image_id): r for r in records}
    chosen = list(records[: count // 2])
    taken = {int(r.image_id) for r in chosen}
    for row in worst_images(per_image, len(per_image)):
        if len(chosen) >= count:
            break
        if row["image_id"] not in taken and row["image_id"] in by_id:
            chosen.append(by_id[row["image_id"]])
            taken.add(row["image_id"])
    return chosen


def read_png_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def write_eval_pictures(gt: dict, results: list[dict], records: Sequence[Any], output_dir: str | Path,
                        score_thresh: float, grid_images: int, backend: str = "faster_coco_eval",
                        max_image_pixels: int | None = None) -> tuple[dict, list[tuple[str, np.ndarray]]]:
    """Write the analysis and the grid into output_dir; returns (analysis dict, TensorBoard
    pictures as (tag, uint8 HWC) pairs). `records` are the evaluated images, in test order."""
    from detector.data.image_io import DEFAULT_MAX_IMAGE_PIXELS
    from detector.evaluation.analysis.pipeline import write_analysis

    output_dir = Path(output_dir)
    analysis = write_analysis(gt, results, output_dir, backend=backend)
    pictures = {key: output_dir / name for key, name in analysis["files"].items()}
    if grid_images > 0:
        chosen = grid_records(records, analysis["per_image"], grid_images)
        recall = {row["image_id"]: row for row in analysis["per_image"]}
        grid = draw_grid(chosen, gt, results, recall, score_thresh, max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)
        if grid is not None:
            cv2.imwrite(str(output_dir / GRID_FILE), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
            analysis["files"]["grid"] = GRID_FILE
            pictures["grid"] = output_dir / GRID_FILE
    images = [(f"eval/{Path(path).stem}", read_png_rgb(path)) for key, path in pictures.items()]
    return analysis, images
