"""The dataset doctor: reports every problem of a dataset; exit 0 when clean, 1 otherwise.

`detector-check-dataset`, or `python tools/check_dataset.py` with the same arguments:

    detector-check-dataset dataset=bccd              # the same overrides as training
    detector-check-dataset --images DIR --annotations FILE.json

Missing, unreadable or mis-sized images, zero-area / negative / NaN / outside boxes,
unknown category ids, duplicate ids, annotations pointing at missing images, malformed
segmentations (polygons with odd coordinate counts, RLEs not the size of their image); then
images without boxes, how many boxes have masks, the class histogram and COCO's
small/medium/large histogram.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dataset overrides, e.g. dataset=coco128")
    parser.add_argument("--images", help="image folder of a COCO-format dataset")
    parser.add_argument("--annotations", help="COCO JSON file")
    parser.add_argument("--no-decode", action="store_true", help="skip decoding the images (annotations only)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads decoding images")
    args = parser.parse_args(argv)
    if bool(args.images) != bool(args.annotations):
        parser.error("--images and --annotations go together")

    from detector.data.dataset_report import format_report, report_split
    from detector.data.image_io import DEFAULT_MAX_IMAGE_PIXELS
    from detector.utils.logger import setup_logger

    setup_logger(None)  # progress of the image decoding (log lines when the output is not a terminal)

    try:
        if args.images:
            from detector.data.build import load_json
            from detector.data.coco_index import index_coco

            if not os.path.isdir(args.images):
                raise FileNotFoundError(f"--images {args.images}: no such folder")
            if not os.path.isfile(args.annotations):
                raise FileNotFoundError(f"--annotations {args.annotations}: no such file")
            splits = [(args.annotations, index_coco(load_json(args.annotations), args.images, args.annotations),
                       DEFAULT_MAX_IMAGE_PIXELS)]
        else:
            from detector.config import load_config
            from detector.data.build import build_index

            cfg = load_config(args.overrides)
            splits = [(f"{cfg.dataset.name} {split}", build_index(cfg, split), int(cfg.dataset.max_image_pixels))
                      for split in ("train", "test")]
    except Exception as error:  # noqa: BLE001 - a doctor reports, it does not print tracebacks
        print(f"error: {error}", file=sys.stderr)
        return 1

    failed = False
    for name, index, max_pixels in splits:
        report = report_split(name, index, max_pixels, decode_images=not args.no_decode, workers=args.workers)
        print(format_report(report))
        failed |= bool(report.errors)
    print("RESULT: problems found" if failed else "RESULT: clean")
    return 1 if failed else 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
