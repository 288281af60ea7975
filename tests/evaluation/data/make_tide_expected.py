"""Compute TIDE's reference dAP with the original implementation (tidecv 1.0.1).

Not part of the test suite and not a dependency of the project: run it by hand, once,
in a separate virtual environment, to (re)produce the tide_expected_*.json files that
tests/evaluation/test_tide_agreement.py compares tools/analyze.py against:

    python3 -m venv /tmp/tidevenv
    /tmp/tidevenv/bin/pip install numpy pycocotools pandas seaborn appdirs matplotlib opencv-python-headless tidecv==1.0.1
    /tmp/tidevenv/bin/python tests/evaluation/data/make_tide_expected.py GT.json[.gz] RESULTS.json[.gz] OUT.json \
        [--mode box|mask] [--note TEXT]

--mode mask (TIDE.MASK) compares detections with objects by their masks: the results need a
"segmentation" RLE each, the ground truth a segmentation per annotation (polygons or RLE).

tidecv 1.0.1 predates numpy 2 (it uses np.float / np.int), so those aliases are set before
it is imported. Its COCO reader converts every annotation's "segmentation" to a mask even in
box mode; annotations without one get their box as a polygon (used for nothing in box mode).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile

import numpy as np

np.float = float  # removed in numpy 1.24; tidecv 1.0.1 still uses them
np.int = int

import tidecv  # noqa: E402
from tidecv import TIDE, datasets  # noqa: E402


def _with_segmentation(gt: dict) -> dict:
    gt = json.loads(json.dumps(gt))
    for ann in gt["annotations"]:
        if not ann.get("segmentation"):
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        ann.setdefault("iscrowd", 0)
    return gt


def _load(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gt")
    parser.add_argument("results")
    parser.add_argument("output")
    parser.add_argument("--mode", choices=("box", "mask"), default="box")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    gt = _with_segmentation(_load(args.gt))
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, results_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "results.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(results_path, "w") as f:
            json.dump(_load(args.results), f)
        mode = TIDE.MASK if args.mode == "mask" else TIDE.BOX
        tide = TIDE()  # pos_threshold 0.5, background_threshold 0.1
        run = tide.evaluate(datasets.COCO(gt_path), datasets.COCOResult(results_path, name="results"), mode=mode)
        main_errors = tide.get_main_errors()[run.preds.name]
        special = tide.get_special_errors()[run.preds.name]
        counts = {error.short_name: n for error, n in run.count_errors().items()}
    expected = {
        "produced_by": f"tidecv {tidecv.__version__}: TIDE().evaluate(COCO(gt), COCOResult(results), "
                       f"mode=TIDE.{args.mode.upper()}); get_main_errors(), get_special_errors() (dAP in AP points)",
        "command": f"python tests/evaluation/data/make_tide_expected.py {args.gt} {args.results} {args.output}"
                   + (" --mode mask" if args.mode == "mask" else ""),
        "note": args.note,
        "ap50": run.ap,
        "main": main_errors,
        "special": special,
        "counts": counts,
    }
    with open(args.output, "w") as f:
        json.dump(expected, f, indent=1)
    tide.summarize()
    print(json.dumps(expected, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
