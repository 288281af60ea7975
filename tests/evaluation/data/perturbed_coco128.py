"""Realistic detections for coco128, made from its ground truth by known perturbations.

No trained COCO model runs in the test budget, so the crowd-region case of the TIDE agreement
test (test_tide_agreement.py) analyses "results" derived from the annotations themselves,
deterministically (numpy's PCG64 generator, seed 0). Each image's annotations, in file order:

- a crowd region gets two detections of its own class inside it (COCO and TIDE ignore
  them) and one of another class (an error);
- a real object is dropped with probability 0.12 (missed); otherwise it gets a detection
  whose box is its own, jittered by 5% of its size, and whose score is 0.3 + 0.7 * Beta(4, 2);
  with probability 0.12 that detection takes a random class of the 80 (a cls error, often of
  a class with no object in coco128); with probability 0.15 its box is shifted by 35-60% of
  the object's size (a loc error, or both with a wrong class);
- with probability 0.1 the object gets a second, lower-scoring jittered detection (dupe).

Then each image gets Poisson(1) background boxes of random classes, scored U(0.01, 0.6).
Boxes are clipped to the image. For TIDE's mask mode, `perturbed_mask_results` gives the same
detections, each with its box filled as its mask (an RLE; a box-shaped mask overlaps an
object's polygon less than the box does, so the error kinds shift). Run as a script to write
the results file (add --masks for the mask results):

    python tests/evaluation/data/perturbed_coco128.py ../shared/datasets/coco128/annotations/instances_train2017.json OUT.json [--masks]
"""
from __future__ import annotations

import json
import sys

import numpy as np

SEED = 0


def _clip(box, width: float, height: float) -> list[float]:
    x1, y1 = max(0.0, box[0]), max(0.0, box[1])
    x2, y2 = min(width, box[0] + box[2]), min(height, box[1] + box[3])
    return [float(x1), float(y1), float(max(x2 - x1, 1.0)), float(max(y2 - y1, 1.0))]


def _jitter(rng, bbox, scale: float) -> list[float]:
    x, y, w, h = bbox
    dx, dy, dw, dh = rng.normal(0.0, scale, 4)
    return [x + dx * w, y + dy * h, w * (1 + dw), h * (1 + dh)]


def perturbed_results(gt: dict, seed: int = SEED) -> list[dict]:
    rng = np.random.default_rng(seed)
    category_ids = sorted(int(c["id"]) for c in gt["categories"])
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    results = []
    for image in sorted(gt["images"], key=lambda im: im["id"]):
        image_id, width, height = int(image["id"]), float(image["width"]), float(image["height"])

        def add(category_id, box, score):
            results.append({"image_id": image_id, "category_id": int(category_id),
                            "bbox": _clip(box, width, height), "score": float(score)})

        for ann in by_image.get(image_id, []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            own = int(ann["category_id"])
            if ann.get("iscrowd", 0):
                for _ in range(2):
                    u = rng.uniform(0.0, 0.7, 2)
                    add(own, [x + u[0] * w, y + u[1] * h, 0.3 * w, 0.3 * h], rng.uniform(0.05, 0.9))
                other = category_ids[int(rng.integers(len(category_ids)))]
                add(other, [x + 0.2 * w, y + 0.2 * h, 0.4 * w, 0.4 * h], rng.uniform(0.05, 0.9))
                continue
            if rng.random() < 0.12:
                continue
            category_id = own
            if rng.random() < 0.12:
                category_id = category_ids[int(rng.integers(len(category_ids)))]
            box = _jitter(rng, (x, y, w, h), 0.05)
            if rng.random() < 0.15:
                shift = rng.uniform(0.35, 0.6) * rng.choice([-1.0, 1.0], 2)
                box = [box[0] + shift[0] * w, box[1] + shift[1] * h, box[2], box[3]]
            score = 0.3 + 0.7 * rng.beta(4.0, 2.0)
            add(category_id, box, score)
            if rng.random() < 0.1:
                add(own, _jitter(rng, (x, y, w, h), 0.08), score * rng.uniform(0.3, 0.9))
        for _ in range(int(rng.poisson(1.0))):
            w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            add(category_ids[int(rng.integers(len(category_ids)))], [x, y, w, h], rng.uniform(0.01, 0.6))
    return results


def perturbed_mask_results(gt: dict, seed: int = SEED) -> list[dict]:
    from pycocotools import mask as mask_utils

    sizes = {int(image["id"]): (int(image["height"]), int(image["width"])) for image in gt["images"]}
    results = perturbed_results(gt, seed)
    for det in results:
        height, width = sizes[det["image_id"]]
        x, y, w, h = det["bbox"]
        rle = mask_utils.merge(mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], height, width))
        det["segmentation"] = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    return results


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        ground_truth = json.load(handle)
    make = perturbed_mask_results if "--masks" in sys.argv[3:] else perturbed_results
    with open(sys.argv[2], "w") as handle:
        json.dump(make(ground_truth), handle)
