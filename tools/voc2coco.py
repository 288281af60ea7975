#!/usr/bin/env python
"""Convert one Pascal VOC split to a COCO JSON file, with the checks the VOC dataset applies.

    python tools/voc2coco.py --root VOC_ROOT --split test --output test.json [--classes a,b,...]

Problems (zero-area boxes, unknown classes, unreadable XML) are printed with the file
and the box; zero-area boxes are left out, difficult objects become iscrowd=1.
"""
import argparse
import json
import os
import sys

from detector.data.voc import voc_split_to_coco_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="VOC folder with Annotations/, JPEGImages/, ImageSets/Main/")
    parser.add_argument("--split", required=True, help="name of ImageSets/Main/<split>.txt, e.g. trainval")
    parser.add_argument("--output", required=True, help="COCO JSON file to write")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names in label order (default: every name in the XML files, sorted)")
    parser.add_argument("--use-difficult", action="store_true", help="keep difficult objects as normal boxes")
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    try:
        coco, problems = voc_split_to_coco_json(args.root, args.split, classes, args.use_difficult)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(coco, handle)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
          f"{len(coco['categories'])} classes ({', '.join(c['name'] for c in coco['categories'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
