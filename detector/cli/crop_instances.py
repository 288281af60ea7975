"""Turn a detection dataset into an ImageFolder of object crops, for classification.

    python tools/crop_instances.py dataset=bccd --output /tmp/bccd_crops
    python tools/crop_instances.py dataset=coco128 --output /tmp/coco128_crops --min-size 16 --margin 0.1
    python tools/crop_instances.py dataset=voc dataset.root=/data/VOC2007 --output /tmp/voc_crops

Writes OUT/train/<class>/*.jpg and OUT/test/<class>/*.jpg following the dataset's own
train/test splits, plus OUT/crops.json with the counts. Crowd (and VOC difficult) boxes
and boxes narrower or shorter than --min-size pixels are not cropped.
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other arguments are config overrides, e.g. dataset=bccd.")
    parser.add_argument("--output", required=True, help="folder to write train/<class>/ and test/<class>/ into")
    parser.add_argument("--min-size", type=float, default=8.0, help="smallest box width and height to crop, in pixels")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="context added on each side, as a fraction of the box width/height (e.g. 0.1)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT/train and OUT/test if they exist")
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unknown option(s) {unknown}; config overrides look like key=value (e.g. dataset=bccd)")
    return args, overrides


def main(argv=None) -> int:
    args, overrides = parse_args(argv)
    from detector.config import load_config
    from detector.data.instance_crops import crop_instances
    from detector.utils.logger import setup_logger

    setup_logger(None)
    cfg = load_config(overrides)
    try:
        report = crop_instances(cfg, args.output, min_size=args.min_size, margin=args.margin, overwrite=args.overwrite)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for split, counts in report.counts.items():
        print(f"{split}: {report.total(split)} crops " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if report.unreadable:
        print(f"{len(report.unreadable)} unreadable image(s) skipped (see the warnings above)")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())


if __name__ == "__main__":  # python -m detector.cli.crop_instances
    run()
