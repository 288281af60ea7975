"""Find the mistakes in your labels: a ranked, pictured list of likely annotation errors.

`detector-find-label-errors`, or `python tools/find_label_errors.py` with the same arguments:

    detector-find-label-errors dataset=auto dataset.path=my_data/ --output label_check/
    detector-find-label-errors dataset=bccd train.time_budget=40m --output bccd_check/ --folds 4
    detector-find-label-errors dataset=bccd --output bccd_check/ --weights run/checkpoints/model_final.pth
    detector-find-label-errors --output label_check/ --rescore label_errors.confident_score=0.7
    detector-find-label-errors --output label_check/ --accept accepted.txt --write-fixed fixed.json

Every image is predicted by a model that did not train on it (K models on K-1 folds each, trained
by detector-train with your overrides), the predictions are compared with your boxes, and each
disagreement is named (missing, wrong_class, loose, spurious) and scored with cleanlab. Results in
--output: label_errors.json / .csv (ranked), gallery/, summary.md. `label_errors.<key>=value`
overrides refine conf/label_errors/default.yaml (thresholds, default time). docs/label_errors.md.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*",
                        help="dataset overrides and any training override (dataset=auto dataset.path=DIR, "
                             "train.time_budget=30m, model=...), and label_errors.<key>=value")
    parser.add_argument("--output", required=True, help="folder for label_errors.json/.csv, gallery/, summary.md")
    parser.add_argument("--folds", type=int, default=None, help="K: models trained on K-1 folds each (default 4)")
    parser.add_argument("--top", type=int, default=None, help="images in the gallery (default 50)")
    parser.add_argument("--weights", default=None,
                        help="predict with this checkpoint instead of training (its training images are not "
                             "honestly predicted)")
    parser.add_argument("--rescore", action="store_true",
                        help="score the predictions an earlier run left in --output again (new label_errors.* "
                             "thresholds), without training")
    parser.add_argument("--accept", default=None,
                        help="with --write-fixed: the accepted entries (rank:N, rank:N-M, id:ANNOTATION_ID per line)")
    parser.add_argument("--write-fixed", default=None, help="with --accept: the corrected COCO JSON to write")
    args = parser.parse_args(argv)
    if bool(args.accept) != bool(args.write_fixed):
        parser.error("--accept and --write-fixed go together")

    from detector.engine.launch import expected_errors
    from detector.label_errors.corrections import AcceptListError
    from detector.label_errors.fold_training import FoldTrainingError
    from detector.label_errors.scoring import MissingCleanlabError
    from detector.utils.logger import setup_logger

    try:
        if args.accept:
            from detector.label_errors.corrections import write_fixed

            target, count = write_fixed(args.output, args.accept, args.write_fixed)
            print(f"{target}: the labels with {count} accepted correction(s)")
            return 0
        from detector.label_errors.job import run_job
        from detector.label_errors.settings import load_settings, split_overrides

        own, training = split_overrides(args.overrides)
        settings = load_settings(own)
        folds = int(args.folds if args.folds is not None else settings.folds)
        top = int(args.top if args.top is not None else settings.top)
        if folds < 2:
            parser.error(f"--folds {folds}: at least 2 (one model per held-out fold)")
        logger = setup_logger(args.output)
        if args.rescore:
            from detector.label_errors.job import rescore

            rescore(settings, args.output, top, logger)
        else:
            run_job(training, settings, args.output, folds, top, args.weights, logger)
    except (*expected_errors(), AcceptListError, FoldTrainingError, MissingCleanlabError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
