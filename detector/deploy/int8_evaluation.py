"""The evaluation detector-export --int8 prints and writes into the int8 file: the written file,
run as eval_only runs it, and the PyTorch model in float32, on the calibration dataset's test
split through the evaluator eval_only uses (detector.evaluation.inference.evaluate_detector, the
config's test loader and test.evaluator). It runs an exported file, so it sits here, above
detector.export, which takes it as export_int8(..., evaluate=evaluate_int8)."""
from __future__ import annotations

from typing import Callable

import torch
from omegaconf import DictConfig

from detector.export.int8_export import Int8Report


def evaluate_int8(report: Int8Report, cfg: DictConfig, model: torch.nn.Module, log: Callable[[str], None]) -> None:
    """Fill report.ap with the written file's and the PyTorch fp32 model's metrics on cfg's test
    split, or report.not_evaluated with the reason there is none."""
    from detector.data.coco_index import DatasetError
    from detector.data.loader import build_test_loader
    from detector.deploy.loading import load_exported
    from detector.evaluation.inference import evaluate_detector

    try:
        loader = build_test_loader(cfg, max_images=cfg.test.max_images)
    except (DatasetError, FileNotFoundError) as error:
        report.not_evaluated = f"dataset={cfg.dataset.name} has no usable test split ({error})"
        return
    dataset = loader.dataset
    if len(dataset) == 0:
        report.not_evaluated = f"dataset={cfg.dataset.name}'s test split is empty"
        return
    exported = load_exported(report.path, precision="fp32")
    iou_types = ("bbox",) + tuple(kind for output, kind in (("masks", "segm"), ("keypoints", "keypoints"))
                                  if output in exported.output_names)
    sigmas = cfg.dataset.keypoint_sigmas if "keypoints" in iou_types else None
    for name, runner in (("int8", exported), ("fp32", model)):
        log(f"[int8] evaluating the {'int8 file' if name == 'int8' else 'PyTorch fp32 model'} on the "
            f"{len(dataset)} test images of dataset={cfg.dataset.name} ...")
        metrics, _ = evaluate_detector(runner, loader, dataset.coco_gt, dataset.label_to_category_id,
                                       torch.device("cpu"), backend=str(cfg.test.evaluator), iou_types=iou_types,
                                       keypoint_sigmas=sigmas)
        report.ap[name] = metrics
    report.test_images = len(dataset) if cfg.test.max_images is None else min(len(dataset), int(cfg.test.max_images))
