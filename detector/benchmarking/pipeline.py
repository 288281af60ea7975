"""The rest of a training run's time: the data pipeline, and COCO evaluation."""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from detector.benchmarking.timing import interleaved_times, ratio, summarize


def loader_throughput(cfg, batches: int, warmup: int) -> dict:
    """Images per second the training loader delivers (decode, augment, collate)."""
    from detector.data import build_train_loader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a dataset's known defects are not the point here
        iterator = iter(build_train_loader(cfg))
        for _ in range(warmup):
            next(iterator)
        start = time.perf_counter()
        images = sum(len(next(iterator)["images"]) for _ in range(batches))
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "batches": batches, "workers": int(cfg.dataloader.num_workers),
            "batch_size": int(cfg.dataloader.batch_size)}


def recipe_step_throughput(cfg, device: torch.device, repeats: int, warmup: int) -> dict:
    """Images per second a training step of `cfg`'s model consumes, on the recipe's own batches
    (the loader is drained first, so only the step is timed)."""
    from detector.data import build_train_loader
    from detector.engine.precision import resolve_precision
    from detector.modeling.build import build_model
    from detector.benchmarking.training import training_step

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        iterator = iter(build_train_loader(cfg))
        batches = [next(iterator) for _ in range(warmup + repeats)]
    model = build_model(cfg).to(device)
    precision = resolve_precision(cfg.train.amp, device)
    steps = []
    for batch in batches:
        images = [im.to(device) for im in batch["images"]]
        targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in batch["targets"]]
        steps.append(training_step(model, images, targets, device, precision.dtype))
    times = interleaved_times({"step": lambda i: steps[i](i)}, repeats, warmup, device)["step"]
    median = summarize(times)["median_s"]
    return {"step": summarize(times), "images_per_s": cfg.dataloader.batch_size / median,
            "amp": str(cfg.train.amp), "batch_size": int(cfg.dataloader.batch_size)}


def synthetic_detections(gt: dict, per_image: int, seed: int) -> list[dict]:
    """COCO results for every image of `gt`: each object found with jitter, plus random
    boxes up to `per_image` -- a realistic mix of hits, near misses and false positives."""
    rng = np.random.default_rng(seed)
    categories = [c["id"] for c in gt["categories"]]
    by_image: dict[int, list] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    results = []
    for image in gt["images"]:
        width, height = image["width"], image["height"]
        objects = by_image.get(image["id"], [])[:per_image]
        for ann in objects:
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
            category = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(categories))
            results.append({"image_id": image["id"], "category_id": category, "score": float(rng.random()),
                            "bbox": [float(x + jitter[0]), float(y + jitter[1]),
                                     float(max(1.0, w + jitter[2])), float(max(1.0, h + jitter[3]))]})
        for _ in range(per_image - len(objects)):
            w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)
            results.append({"image_id": image["id"], "category_id": int(rng.choice(categories)),
                            "score": float(rng.random() * 0.5),
                            "bbox": [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)),
                                     float(w), float(h)]})
    return results


def pycocotools_stats(gt: dict, results: list[dict]) -> list[float]:
    """pycocotools as its users call it: COCO, loadRes, evaluate, accumulate, summarize."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def fresh_copy(gt: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """Records pycocotools may annotate in place, copied (outside the timed call)."""
    return ({**gt, **{k: [dict(r) for r in gt[k]] for k in ("images", "annotations", "categories")}},
            [dict(r) for r in results])


def evaluation_time(gt: dict, results: list[dict], repeats: int, device: torch.device) -> dict:
    """The same detections through this project's evaluator (evaluate_boxes with its default
    faster-coco-eval backend, input checks and copies included) and through plain pycocotools,
    alternating; the twelve stats must agree."""
    from detector.evaluation.coco_backends import STAT_NAMES
    from detector.evaluation.coco_evaluator import evaluate_boxes

    outputs: dict = {}
    copies = [fresh_copy(gt, results) for _ in range(repeats + 1)]

    def ours(_):
        outputs["ours"] = evaluate_boxes(gt, results)

    def reference(i):
        outputs["pycocotools"] = pycocotools_stats(*copies[i])

    times = interleaved_times({"ours": ours, "pycocotools": reference}, repeats, 1, device)
    stats_ours = [-1.0 if outputs["ours"][k] is None else outputs["ours"][k] for k in STAT_NAMES]
    differences = [abs(a - b) for a, b in zip(stats_ours, outputs["pycocotools"])]
    return {"images": len(gt["images"]), "detections": len(results),
            "ours": summarize(times["ours"]), "pycocotools": summarize(times["pycocotools"]),
            "ratio": ratio(times["ours"], times["pycocotools"]), "max_stat_diff": max(differences),
            "AP": outputs["ours"]["AP"]}
