"""COCO box evaluation of a results file.

`detector-eval`, or `python tools/evaluate.py` with the same arguments:

    detector-eval --gt GT.json --results RESULTS.json [--out metrics.json]
        [--evaluator faster_coco_eval|pycocotools]
"""
from __future__ import annotations

import argparse
import sys

from detector.evaluation.coco_evaluator import (
    BACKENDS,
    EvaluationError,
    evaluate_boxes,
    format_per_category,
    format_summary,
    load_json,
    metrics_document,
    write_json,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="COCO ground-truth annotation JSON")
    parser.add_argument("--results", required=True, help="detections in COCO results format (JSON list)")
    parser.add_argument("--out", help="write the metrics here, in the shape of metrics.json")
    parser.add_argument("--evaluator", default="faster_coco_eval", choices=BACKENDS)
    args = parser.parse_args(argv)
    try:
        gt = load_json(args.gt, "Ground-truth")
        results = load_json(args.results, "Results")
        metrics = evaluate_boxes(gt, results, backend=args.evaluator)
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Evaluated {len(results)} detections on {len(gt.get('images', []))} images ({args.evaluator}).")
    print(format_summary(metrics))
    print("\nPer-category AP:")
    print(format_per_category(metrics["per_category"]))
    if args.out:
        write_json(metrics_document(metrics, None), args.out)
        print(f"\nWrote {args.out}")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
