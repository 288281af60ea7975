"""Running a detector over a (sharded) test loader and evaluating the gathered detections.

Each rank runs its shard of the test set; the detections are gathered on rank 0, which
alone evaluates and writes files, so the metrics equal those of a single process. The
metrics are then broadcast so every rank returns the same dictionary.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from detector.evaluation.coco_evaluator import evaluate_results
from detector.evaluation.coco_summary import format_per_category, format_summary, metrics_document
from detector.evaluation.json_files import write_json
from detector.evaluation.results_format import MASK_THRESHOLD, detections_to_coco_results
from detector.utils.distributed import broadcast_from_main, gather_to_main, is_main_process
from detector.utils.progress import Progress

logger = logging.getLogger(__name__)


@dataclass
class InferenceOutput:
    results: list[dict] = field(default_factory=list)        # COCO results format
    image_ids: list[int] = field(default_factory=list)       # every image this rank ran
    skipped: list[str] = field(default_factory=list)
    # A few (image uint8 HWC, boxes, labels, scores) for pictures, from the first images; a mask
    # model's also carry its binary masks (bool [N, H, W]) as a fifth item.
    samples: list[tuple] = field(default_factory=list)


@torch.no_grad()
def run_inference(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, Any]],
    label_to_category_id: Mapping[int, int],
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    max_images: int | None = None,
    num_samples: int = 0,
) -> InferenceOutput:
    """Detections of `model` on every batch of `loader` (this rank's shard)."""
    was_training = model.training
    model.eval()
    out = InferenceOutput()
    start = time.perf_counter()
    progress = Progress(total=shard_size(loader, max_images), desc="inference", unit="images")
    try:
        for batch in loader:
            images = batch["images"]
            image_ids = list(batch["image_ids"])
            if max_images is not None:
                room = max_images - len(out.image_ids)
                if room <= 0:
                    break
                images, image_ids = images[:room], image_ids[:room]
            out.skipped.extend(batch.get("skipped", []))
            progress.update(len(batch.get("skipped", [])))  # unreadable images were part of the shard too
            if not images:
                continue
            inputs = [image.to(device, non_blocking=True) for image in images]
            autocast = (
                torch.autocast(device_type=device.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                outputs = model(inputs)
            outputs = [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs]
            out.results.extend(detections_to_coco_results(outputs, image_ids, label_to_category_id))
            out.image_ids.extend(int(i) for i in image_ids)
            progress.update(len(image_ids))
            for image, output in zip(images, outputs):
                if len(out.samples) >= num_samples:
                    break
                picture = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                sample = (picture, output["boxes"].numpy(), output["labels"].numpy(), output["scores"].numpy())
                if "masks" in output:
                    sample += (sample_masks(output["masks"]),)
                out.samples.append(sample)
    finally:
        progress.close()
        model.train(was_training)
    logger.info(
        "Inference on %d images took %.1fs (%.3f s/image).",
        len(out.image_ids), time.perf_counter() - start, (time.perf_counter() - start) / max(1, len(out.image_ids)),
    )
    return out


def sample_masks(masks: torch.Tensor) -> np.ndarray:
    """A mask model's [N, 1, H, W] probabilities as the bool [N, H, W] masks that are drawn."""
    masks = masks[:, 0] if masks.dim() == 4 else masks
    return (masks > MASK_THRESHOLD).numpy() if masks.dtype != torch.bool else masks.numpy()


def shard_size(loader: Iterable, max_images: int | None) -> int | None:
    """Images this rank will run, for the progress ETA (None when the loader does not say)."""
    indices = getattr(getattr(loader, "batch_sampler", None), "indices", None)
    size = len(indices) if indices is not None else None
    if max_images is not None:
        size = max_images if size is None else min(size, max_images)
    return size


def gather_inference(local: InferenceOutput) -> InferenceOutput | None:
    """All ranks' detections on rank 0 (None elsewhere), de-duplicated by image id."""
    parts = gather_to_main((local.results, local.image_ids, local.skipped))
    if parts is None:
        return None
    merged = InferenceOutput(samples=local.samples)
    seen: set[int] = set()
    # A distributed sampler may pad a shard by repeating images; keep each image once.
    for results, image_ids, skipped in parts:
        fresh = {i for i in image_ids if i not in seen}
        merged.results.extend(r for r in results if r["image_id"] in fresh)
        merged.image_ids.extend(i for i in image_ids if i in fresh)
        seen.update(fresh)
        merged.skipped.extend(skipped)
    merged.results.sort(key=lambda r: (r["image_id"], -r["score"]))
    merged.image_ids.sort()
    return merged


def evaluate_detector(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, Any]],
    coco_gt: Any,
    label_to_category_id: Mapping[int, int],
    device: torch.device,
    output_dir: str | Path | None = None,
    iteration: int | None = None,
    backend: str = "faster_coco_eval",
    autocast_dtype: torch.dtype | None = None,
    max_images: int | None = None,
    num_samples: int = 0,
    log: logging.Logger | None = None,
    iou_types: tuple[str, ...] = ("bbox",),
    keypoint_sigmas: Sequence[float] | None = None,
) -> tuple[dict[str, Any], list[tuple]]:
    """Run, gather, evaluate. Returns (metrics, picture samples of this rank).

    On rank 0, writes `output_dir/inference/coco_instances_results.json` and
    `output_dir/metrics.json` when `output_dir` is given. `coco_gt` may be a COCO object
    or a callable returning one (only rank 0 needs to build it).

    iou_types: ("bbox",) for a box model -- metrics is then the box evaluation
    ({"AP", ..., "per_category"}) and metrics.json {"iteration", "bbox"}; ("bbox", "segm")
    for a mask model -- metrics is {"bbox": {...}, "segm": {...}}, each with the same keys,
    and metrics.json gains the "segm" block. ("bbox", "keypoints") for a keypoint model, likewise,
    compared by OKS with `keypoint_sigmas` (None: COCO's person sigmas).
    """
    log = log or logger
    local = run_inference(model, loader, label_to_category_id, device, autocast_dtype, max_images, num_samples)
    merged = gather_inference(local)
    metrics = None
    if merged is not None and is_main_process():
        gt = coco_gt() if callable(coco_gt) else coco_gt
        if merged.skipped:
            log.warning("%d test images could not be read and were left out: %s", len(merged.skipped), merged.skipped[:5])
        by_type = evaluate_results(gt, merged.results, iou_types, backend=backend, image_ids=merged.image_ids,
                                   keypoint_sigmas=keypoint_sigmas)
        for iou_type, numbers in by_type.items():
            log.info(
                "Evaluation%s of %d images, %d detections (%s)%s:\n%s\nPer-category AP%s:\n%s",
                "" if iou_types == ("bbox",) else f" ({iou_type})",
                len(merged.image_ids), len(merged.results), backend,
                "" if iteration is None else f" at iteration {iteration}",
                format_summary(numbers, iou_type), "" if iou_types == ("bbox",) else f" ({iou_type})",
                format_per_category(numbers["per_category"]),
            )
        metrics = by_type["bbox"] if tuple(by_type) == ("bbox",) else by_type
        if output_dir is not None:
            write_json(merged.results, Path(output_dir) / "inference" / "coco_instances_results.json")
            write_json(metrics_document(metrics, iteration), Path(output_dir) / "metrics.json")
    metrics = broadcast_from_main(metrics)
    return metrics, local.samples
