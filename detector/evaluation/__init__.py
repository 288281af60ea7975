"""COCO box and mask evaluation: backends, results format, distributed inference."""
from detector.evaluation.coco_backends import BACKENDS, STAT_NAMES
from detector.evaluation.coco_checks import IOU_TYPES, EvaluationError
from detector.evaluation.coco_evaluator import evaluate_boxes, evaluate_coco, evaluate_results
from detector.evaluation.coco_summary import format_per_category, format_summary, metrics_document
from detector.evaluation.inference import evaluate_detector, run_inference
from detector.evaluation.results_format import detections_to_coco_results

__all__ = [
    "BACKENDS",
    "IOU_TYPES",
    "STAT_NAMES",
    "EvaluationError",
    "evaluate_boxes",
    "evaluate_coco",
    "evaluate_results",
    "format_per_category",
    "format_summary",
    "metrics_document",
    "evaluate_detector",
    "run_inference",
    "detections_to_coco_results",
]
