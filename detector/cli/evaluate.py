"""COCO evaluation of a results file, by box (bbox, the default), by mask (segm) or by keypoints.

`detector-eval`, or `python tools/evaluate.py` with the same arguments:

    detector-eval --gt GT.json --results RESULTS.json [--out metrics.json]
        [--evaluator faster_coco_eval|pycocotools] [--iou-type bbox|segm|keypoints [...]]
        [--keypoint-sigmas S1,S2,...]

segm needs ground-truth polygons/RLE and results with an RLE "segmentation";
`--iou-type bbox segm` evaluates a mask model's results both ways. keypoints compares the
results' "keypoints" by OKS, with COCO's person sigmas unless --keypoint-sigmas gives one per keypoint.
"""
from __future__ import annotations

import argparse
import sys

from detector.evaluation.coco_backends import BACKENDS
from detector.evaluation.coco_checks import EVALUATION_IOU_TYPES, EvaluationError
from detector.evaluation.coco_evaluator import evaluate_results
from detector.evaluation.coco_summary import format_per_category, format_summary, metrics_document
from detector.evaluation.json_files import load_json, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="COCO ground-truth annotation JSON")
    parser.add_argument("--results", required=True, help="detections in COCO results format (JSON list)")
    parser.add_argument("--out", help="write the metrics here, in the shape of metrics.json")
    parser.add_argument("--evaluator", default="faster_coco_eval", choices=BACKENDS)
    parser.add_argument("--iou-type", nargs="+", default=["bbox"], choices=EVALUATION_IOU_TYPES,
                        help="bbox: compare boxes; segm: compare masks (RLE results); keypoints: by OKS; several: one block each")
    parser.add_argument("--keypoint-sigmas", type=_sigmas, default=None,
                        help="OKS sigmas, one per keypoint, comma-separated (default: COCO's 17 person sigmas)")
    args = parser.parse_args(argv)
    iou_types = list(dict.fromkeys(args.iou_type))
    try:
        gt = load_json(args.gt, "Ground-truth")
        results = load_json(args.results, "Results")
        by_type = evaluate_results(gt, results, iou_types, backend=args.evaluator, keypoint_sigmas=args.keypoint_sigmas)
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Evaluated {len(results)} detections on {len(gt.get('images', []))} images ({args.evaluator}).")
    for iou_type, metrics in by_type.items():
        if iou_types != ["bbox"]:
            print(f"\nIoU type {iou_type}:")
        print(format_summary(metrics, iou_type))
        print(f"\nPer-category AP ({iou_type}):" if iou_types != ["bbox"] else "\nPer-category AP:")
        print(format_per_category(metrics["per_category"]))
    if args.out:
        write_json(metrics_document(by_type, None), args.out)
        print(f"\nWrote {args.out}")
    return 0


def _sigmas(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keypoint-sigmas {text!r}: expected comma-separated numbers, e.g. 0.05,0.05") from None


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
