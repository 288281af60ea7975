"""Box IoU exactly as COCO computes it for boxes ([x, y, w, h], float64).

The formula and the order of operations follow pycocotools' bbIou so that a detection
on the 0.5 border is matched here exactly as COCOeval matches it. Against a crowd region
the "IoU" is the intersection over the detection's own area: a detection inside a crowd
of people is covered by it, however large the crowd.
"""
from __future__ import annotations

import numpy as np


def coco_box_iou(det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray | None = None) -> np.ndarray:
    """[D, G] IoU between detections and ground-truth boxes, both [N, 4] x, y, w, h."""
    det = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    crowd = np.zeros(len(gt), dtype=bool) if gt_crowd is None else np.asarray(gt_crowd, dtype=bool)
    dx, dy, dw, dh = (det[:, i : i + 1] for i in range(4))
    gx, gy, gw, gh = (gt[None, :, i] for i in range(4))
    width = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    height = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = width * height
    det_area = dw * dh
    union = np.where(crowd[None, :], det_area, det_area + gw * gh - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((width > 0) & (height > 0), iou, 0.0)


def coco_to_xyxy(boxes) -> np.ndarray:
    """[N, 4] x1, y1, x2, y2 (float64) of COCO [x, y, w, h] boxes (any sequence of four numbers)."""
    xyxy = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]
    return xyxy
