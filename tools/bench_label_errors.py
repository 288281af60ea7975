"""How many planted label errors detector-find-label-errors finds on bccd (docs/label_errors.md).

bccd's labels (train and test, as dataset=bccd reads them) are copied into a temporary folder as
a COCO export (images symlinked, nothing written into the repository), seeded errors are planted
(detector/label_errors/planting.py: 5% of the boxes removed, 5% given another class, 5% shifted
by half their size), the planted list is kept aside, and the whole tool runs on the copy with
dataset=coco_format (so schedule=auto's recipe, as for a user's own data). Printed: per kind, the
precision among the top 50 / top 100 suspect images, the recall in the top 200 suspects, the
matching rule, and the wall time of the whole job.

    python tools/bench_label_errors.py --folds 4 train.max_iter=350     # fixed iterations: load-independent
    python tools/bench_label_errors.py --folds 4 train.time_budget=30m  # the job's time instead
    python tools/bench_label_errors.py --weights run/checkpoints/model_final.pth   # one given model
    python tools/bench_label_errors.py --work DIR --rescore   # the figures again from DIR's predictions
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def write_copy(coco: dict, folder: Path) -> list[str]:
    """`coco` (pooled: absolute file names, a split per image) as a COCO export in `folder`:
    images/ (symlinks), train.json, test.json; the overrides that read it."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    per_split = {"train": {"images": [], "annotations": []}, "test": {"images": [], "annotations": []}}
    split_of = {}
    for image in coco["images"]:
        name = os.path.basename(image["file_name"])
        link = images / name
        if not link.exists():
            link.symlink_to(image["file_name"])
        split_of[image["id"]] = image["split"]
        per_split[image["split"]]["images"].append({k: v for k, v in image.items() if k not in ("name", "split")}
                                                   | {"file_name": name})
    for ann in coco["annotations"]:
        per_split[split_of[ann["image_id"]]]["annotations"].append(ann)
    overrides = ["dataset=coco_format"]
    for split, part in per_split.items():
        path = folder / f"{split}.json"
        path.write_text(json.dumps({"images": part["images"], "annotations": part["annotations"],
                                    "categories": coco["categories"]}))
        overrides += [f"dataset.{split}.images={images}", f"dataset.{split}.annotations={path}"]
    return overrides


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="training overrides for every fold, e.g. train.max_iter=350")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="the planting's seed")
    parser.add_argument("--share", type=float, default=0.05, help="share of the boxes for each planted kind")
    parser.add_argument("--weights", default=None,
                        help="predict with this checkpoint instead of training folds (the tool's --weights)")
    parser.add_argument("--rescore", action="store_true",
                        help="measure again from the predictions of an earlier run in --work (the tool's --rescore)")
    parser.add_argument("--work", default=None, help="folder for the copy and the tool's output (default: a temporary one)")
    args = parser.parse_args(argv)

    from detector.cli.find_label_errors import main as find_label_errors
    from detector.config import load_config
    from detector.label_errors.planting import plant_errors
    from detector.label_errors.pooled_dataset import build_pooled

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_label_errors_"))
    output = work / "label_errors"
    if args.rescore:
        return rescore(work, output)
    pooled = build_pooled(load_config(["dataset=bccd"]))
    for image in pooled["images"]:
        image["name"] = os.path.basename(image["file_name"])   # as the copy's COCO files name them
    damaged, planted = plant_errors(pooled, args.seed, args.share)
    (work / "planted.json").write_text(json.dumps(planted, indent=1))
    dataset = write_copy(damaged, work / "data")
    print(f"bccd: {len(pooled['images'])} images, {len(pooled['annotations'])} boxes; planted (seed {args.seed}): "
          + ", ".join(f"{sum(1 for p in planted if p['kind'] == k)} {k}" for k in ("missing", "wrong_class", "loose"))
          + f"; copy in {work / 'data'}", flush=True)
    started = time.time()
    code = find_label_errors([*dataset, *args.overrides, "--output", str(output), "--folds", str(args.folds),
                              *(["--weights", args.weights] if args.weights else [])])
    wall = time.time() - started
    if code != 0:
        print(f"detector-find-label-errors failed (exit code {code})", file=sys.stderr)
        return code
    (work / "job.json").write_text(json.dumps({"wall_s": wall, "folds": args.folds, "overrides": args.overrides,
                                               "weights": args.weights}))
    report(work, output, planted, len(damaged["images"]))
    how = f"--weights {args.weights}" if args.weights else f"--folds {args.folds}"
    print(f"wall time of the whole job: {wall:.0f} s ({wall / 60:.1f} min), {how} "
          f"{' '.join(args.overrides)}; results in {output}")
    return 0


def report(work: Path, output: Path, planted: list[dict], num_images: int) -> None:
    from detector.label_errors.planting import format_figures, measure
    from detector.label_errors.report import read_entries

    figures = measure(read_entries(output), planted, num_images)
    (work / "figures.json").write_text(json.dumps(figures, indent=1))
    print(format_figures(figures))
    print("Rule: a removed box is found by a `missing` suspect in its image whose predicted box overlaps the true "
          "box at IoU >= 0.5; a swapped or shifted box by a `wrong_class` / `loose` suspect naming its annotation id. "
          "Precision: images with a planted error of that kind among the top N images ranked by their best suspect "
          "of that kind (all: any kind). Recall: planted errors found among the top 200 suspects of their kind. "
          "Base rate: the share of all images with such an error.")


def rescore(work: Path, output: Path) -> int:
    """--rescore: the tool's --rescore on the earlier run's predictions, then the same figures."""
    from detector.cli.find_label_errors import main as find_label_errors
    from detector.label_errors.pooled_dataset import POOLED_FILE, read_pooled

    planted = json.loads((work / "planted.json").read_text())
    started = time.time()
    code = find_label_errors(["--output", str(output), "--rescore"])
    if code != 0:
        return code
    report(work, output, planted, len(read_pooled(output / POOLED_FILE)["images"]))
    job = work / "job.json"
    before = f"; the job that made the predictions took {json.loads(job.read_text())['wall_s']:.0f} s" \
        if job.is_file() else ""
    print(f"rescored in {time.time() - started:.0f} s{before}; results in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
