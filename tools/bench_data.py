#!/usr/bin/env python
"""Throughput of the training data pipeline (decode + augment + collate), in images per second.

    python tools/bench_data.py                       # bccd, 2 workers, its training sizes
    python tools/bench_data.py dataset=coco128 dataloader.num_workers=4 --batches 50

A benchmark, not a test: the figure depends on the machine and on what else runs on it.
"""
import argparse
import os
import sys
import time
import warnings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides (default: dataset=bccd dataloader.num_workers=2)")
    parser.add_argument("--batches", type=int, default=60, help="batches to time")
    parser.add_argument("--warmup", type=int, default=5, help="batches before timing (worker start-up)")
    args = parser.parse_args(argv)

    from detector.config import load_config
    from detector.data import build_train_loader

    cfg = load_config(["dataset=bccd", "dataloader.num_workers=2", *args.overrides])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dataset's known defects are not the point here
        loader = build_train_loader(cfg)
    iterator = iter(loader)
    for _ in range(args.warmup):
        next(iterator)
    start = time.perf_counter()
    images = pixels = 0
    for _ in range(args.batches):
        batch = next(iterator)
        images += len(batch["images"])
        pixels += sum(image.shape[1] * image.shape[2] for image in batch["images"])
    seconds = time.perf_counter() - start
    print(f"dataset={cfg.dataset.name} workers={cfg.dataloader.num_workers} batch={cfg.dataloader.batch_size} "
          f"min_size={list(cfg.aug.min_size)} max_size={cfg.aug.max_size} cpus={os.cpu_count()}")
    print(f"{images} images in {seconds:.2f}s: {images / seconds:.1f} images/s "
          f"(mean {pixels / images / 1e3:.0f} kpixels per image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
