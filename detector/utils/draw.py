"""Drawing boxes with class names (and scores), instance masks and keypoints, on an image, for browsing data and predictions."""
from __future__ import annotations

import zlib

import cv2
import numpy as np


def label_colour(text: str) -> tuple[int, int, int]:
    """A bright colour that is the same for the same class name in every picture."""
    hue = zlib.crc32(text.encode()) % 180
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


# How much of a mask's colour covers the image under it: the picture stays readable.
MASK_ALPHA = 0.45


def draw_masks(image, masks, labels_text, colour: tuple[int, int, int] | None = None,
               alpha: float = MASK_ALPHA) -> np.ndarray:
    """A copy of `image` (HxWx3 uint8 RGB) with each binary mask filled translucently in its
    class's colour (that of its box in draw_boxes) and outlined, so that touching instances
    of one class stay apart. masks: [N, H, W] bool (or 0/1) of the image's size."""
    out = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)).copy()
    masks = np.asarray(masks).astype(bool)
    if masks.ndim == 4 and masks.shape[1] == 1:  # a model's [N, 1, H, W]
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[1:] != out.shape[:2] or len(masks) != len(labels_text):
        raise ValueError(f"Masks of shape {masks.shape} for {len(labels_text)} captions on a {out.shape[0]}x"
                         f"{out.shape[1]} image; expected [{len(labels_text)}, {out.shape[0]}, {out.shape[1]}].")
    for mask, text in zip(masks, labels_text):
        if not mask.any():
            continue
        fill = np.array(colour if colour is not None else label_colour(str(text)), dtype=np.float32)
        out[mask] = np.round(out[mask] * (1 - alpha) + fill * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in fill), 1, cv2.LINE_8)
    return out


# Keypoints below this score (the model's keypoints_scores) are left out of the pictures.
KEYPOINT_SCORE_THRESH = 0.0


def draw_keypoints(image, keypoints, labels_text, skeleton=None, scores=None,
                   score_thresh: float = KEYPOINT_SCORE_THRESH) -> np.ndarray:
    """A copy of `image` (HxWx3 uint8 RGB) with each object's keypoints [N, K, 3] (x, y, v) as
    dots and its skeleton (1-based pairs of keypoints, COCO's convention) as lines, in its
    class's colour. A keypoint is left out where v <= 0 or its score (scores [N, K]) is below
    `score_thresh`; a skeleton line needs both ends."""
    out = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)).copy()
    points = np.asarray(keypoints, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] < 2 or len(points) != len(labels_text):
        raise ValueError(f"Keypoints of shape {points.shape} for {len(labels_text)} captions; expected "
                         f"[{len(labels_text)}, K, 3].")
    shown = points[..., 2] > 0 if points.shape[2] > 2 else np.ones(points.shape[:2], bool)
    if scores is not None:
        shown &= np.asarray(scores, dtype=np.float32).reshape(points.shape[:2]) >= score_thresh
    radius = max(2, round(min(out.shape[:2]) / 200))
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for person, visible, text in zip(points, shown, labels_text):
        colour = label_colour(str(text))
        for a, b in skeleton or ():
            if 0 < a <= len(person) and 0 < b <= len(person) and visible[a - 1] and visible[b - 1]:
                start = tuple(int(round(v)) for v in person[a - 1, :2])
                end = tuple(int(round(v)) for v in person[b - 1, :2])
                cv2.line(out, start, end, colour, thickness, cv2.LINE_AA)
        for (x, y), show in zip(person[:, :2], visible):
            if show:
                cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
                cv2.circle(out, (int(round(x)), int(round(y))), radius, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def draw_boxes(image, boxes, labels_text, scores=None, colour: tuple[int, int, int] | None = None,
               masks=None) -> np.ndarray:
    """A copy of `image` (HxWx3 uint8 RGB) with xyxy pixel `boxes` and their captions drawn.

    labels_text: one caption per box (class names); scores: optional, appended as 0.87;
    colour: one RGB colour for every box (e.g. ground truth against predictions) instead
    of one per class name; masks: optional [N, H, W] binary masks, one per box, filled
    under the boxes (draw_masks).
    Accepts numpy arrays or tensors for boxes, scores and masks.
    """
    out = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)).copy()
    if masks is not None:
        out = draw_masks(out, masks, labels_text, colour)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = None if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    font_scale = max(0.35, min(out.shape[:2]) / 1000)
    for i, (x1, y1, x2, y2) in enumerate(boxes.round().astype(int)):
        text = str(labels_text[i])
        box_colour = colour if colour is not None else label_colour(text)
        cv2.rectangle(out, (x1, y1), (x2, y2), box_colour, thickness, cv2.LINE_8)
        caption = text if scores is None else f"{text} {scores[i]:.2f}"
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1  # inside the box at the top edge
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), box_colour, -1)
        cv2.putText(out, caption, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out
