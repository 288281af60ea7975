"""Runs compared: loss, lr and AP against iteration (one line per run) and a table of each
run's best and final AP with its overrides, from the runs' metrics.jsonl.

`detector-plot-runs`, or `python tools/plot_runs.py` with the same arguments:

    detector-plot-runs RUN_DIR [RUN_DIR ...] --output DIR [--metric bbox/AP] [--mode max|min]

A RUN_DIR is a training output_dir, or a folder holding several (a Hydra sweep's: one
line per job). Writes DIR/loss.png, DIR/lr.png, DIR/ap.png, DIR/runs.md and DIR/runs.csv,
and prints the table.
"""
from __future__ import annotations

import argparse
import sys

from detector.engine.run_comparison import RunFolderError, find_runs, write_comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="training output_dirs (holding metrics.jsonl), or folders holding them")
    parser.add_argument("--output", required=True, help="directory for the plots and the table")
    parser.add_argument("--metric", default="bbox/AP",
                        help="evaluation key for the AP plot and the best/final columns (as in results.csv)")
    parser.add_argument("--mode", default="max", choices=("max", "min"), help="whether higher --metric is better")
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.runs)
    except RunFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = write_comparison(runs, args.output, args.metric, args.mode)
    print(files["table"].read_text())
    print(f"Wrote {', '.join(str(path) for path in files.values())}.")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
