#!/usr/bin/env python
"""Print the training augmentation pipeline (aug.train) and write training images after
augmentation with their ground-truth boxes and class names.

    python tools/browse_dataset.py dataset=bccd --output browse/ --num 16
    python tools/browse_dataset.py aug=my_pipeline --output browse/   # a pipeline of your own

Exactly what the model is fed (same seed, same stream), for checking by eye.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. dataset=coco128")
    parser.add_argument("--output", required=True, help="folder for the pictures")
    parser.add_argument("--num", type=int, default=16, help="number of images")
    args = parser.parse_args(argv)

    import cv2

    from detector.config import load_config
    from detector.data import build_train_loader
    from detector.data.transforms import describe_augmentation
    from detector.utils.draw import draw_boxes

    cfg = load_config(args.overrides + ["dataloader.num_workers=0"])
    try:
        loader = build_train_loader(cfg)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"training augmentation ({len(cfg.aug.train)} transforms, in order; boxes thinner than "
          f"aug.min_box_size={cfg.aug.min_box_size} px afterwards are dropped):")
    for line in describe_augmentation(cfg.aug.train):
        print(f"  {line}")
    names = loader.dataset.class_names
    os.makedirs(args.output, exist_ok=True)
    written = 0
    for batch in loader:
        for image, target in zip(batch["images"], batch["targets"]):
            pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            captions = [names[int(label) - 1] for label in target["labels"]]
            drawn = draw_boxes(pixels, target["boxes"].numpy(), captions)
            path = os.path.join(args.output, f"{written:04d}_image{target['image_id']}.jpg")
            cv2.imwrite(path, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            written += 1
            if written >= args.num:
                print(f"wrote {written} images to {args.output}")
                return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
