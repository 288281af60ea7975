"""Error analysis of a COCO results file: TIDE error kinds with the AP each would recover,

`detector-analyze`, or `python tools/analyze.py` with the same arguments:
a confusion matrix, per-class precision-recall curves and a size breakdown.

    detector-analyze --gt GT.json --results RESULTS.json --output DIR
        [--fg-iou 0.5] [--bg-iou 0.1] [--score-thresh 0.5] [--evaluator faster_coco_eval|pycocotools]
        [--dap-evaluator tide|coco] [--iou-type bbox|segm]

The dAP numbers reproduce TIDE's reference implementation (tidecv 1.0.1) by default;
--dap-evaluator coco re-runs COCOeval after each fix instead (docs/error_analysis.md).

Writes DIR/summary.md, DIR/analysis.json, DIR/error_breakdown.png, DIR/confusion_matrix.png,
DIR/pr_curves.png and DIR/size_breakdown.png, and prints the error table.

--iou-type segm analyses a mask model's results (an RLE "segmentation" per detection):
every IoU -- COCO's AP, TIDE's error kinds, the confusion matrix -- is then the mask IoU,
and detections are sized by their mask area, as in COCO's segm evaluation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.evaluation.analysis.confusion import DEFAULT_SCORE_THRESH
from detector.evaluation.analysis.errors import TIDE_BG_IOU, TIDE_FG_IOU
from detector.evaluation.analysis.pipeline import DAP_EVALUATORS, write_analysis
from detector.evaluation.analysis.report import counts_line, error_table, overall_table
from detector.evaluation.coco_backends import BACKENDS
from detector.evaluation.coco_checks import IOU_TYPES, EvaluationError
from detector.evaluation.json_files import load_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="COCO ground-truth annotation JSON")
    parser.add_argument("--results", required=True, help="detections in COCO results format (JSON list)")
    parser.add_argument("--output", required=True, help="directory for summary.md, analysis.json and the PNGs")
    parser.add_argument("--fg-iou", type=float, default=TIDE_FG_IOU,
                        help="foreground IoU: matching and the AP of the dAP numbers (one of COCO's 0.50:0.05:0.95)")
    parser.add_argument("--bg-iou", type=float, default=TIDE_BG_IOU, help="background IoU (TIDE's 0.1)")
    parser.add_argument("--score-thresh", type=float, default=DEFAULT_SCORE_THRESH,
                        help="detections below this score stay out of the confusion matrix")
    parser.add_argument("--evaluator", default="faster_coco_eval", choices=BACKENDS,
                        help="COCO evaluator for the overall, per-class and per-size AP")
    parser.add_argument("--dap-evaluator", default="tide", choices=DAP_EVALUATORS,
                        help="tide: the AP after each fix as TIDE computes it (tidecv 1.0.1's numbers); "
                             "coco: COCOeval re-run on the fixed detections (unclipped dAP)")
    parser.add_argument("--iou-type", default="bbox", choices=IOU_TYPES,
                        help="bbox: compare boxes; segm: compare masks (results with RLE segmentations)")
    args = parser.parse_args(argv)
    try:
        gt = load_json(args.gt, "Ground-truth")
        results = load_json(args.results, "Results")
        analysis = write_analysis(gt, results, args.output, sources={"gt": args.gt, "results": args.results},
                                  fg_iou=args.fg_iou, bg_iou=args.bg_iou, score_thresh=args.score_thresh,
                                  backend=args.evaluator, dap_evaluator=args.dap_evaluator,
                                  iou_type=args.iou_type)
    except (EvaluationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.iou_type == "segm":
        print("IoU by mask (segm): COCO metrics, TIDE errors and the confusion matrix compare masks.")
    print(overall_table(analysis))
    print()
    print(error_table(analysis))
    print()
    print(counts_line(analysis))
    print(f"\nWrote {Path(args.output) / 'summary.md'}, analysis.json and {len(analysis['files'])} pictures.")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
