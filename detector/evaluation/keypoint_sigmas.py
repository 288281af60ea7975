"""COCO's per-keypoint OKS sigmas for its 17 person keypoints.

OKS (object keypoint similarity) scores a predicted keypoint by exp(-d^2 / (2 s^2 (2 sigma)^2)):
sigma is how far human annotators of that keypoint spread (hips far more than eyes). COCO
measured these on its person keypoints (Ronchi & Perona 2017; cocoapi's Params); a dataset with
other keypoints gives its own, one per keypoint, as `dataset.keypoint_sigmas`.
"""
from __future__ import annotations

# In COCO's keypoint order: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles (left, right).
# Written as cocoapi writes them (tenths, divided by 10), so the floats are bit for bit the library's.
COCO_PERSON_SIGMAS = tuple(value / 10.0 for value in (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72,
    0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
))
