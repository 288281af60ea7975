"""Detect objects in an image or a folder of images with a trained checkpoint or published weights.

`detector-predict`, or `python tools/predict.py` with the same arguments:

    detector-predict --weights torchvision://fasterrcnn_resnet50_fpn_v2 --input my_photos/ --output out/
    detector-predict --weights outputs/shapes_resnet18_narrow/checkpoints/model_final.pth \
        --input path/to/images --output predictions/ [--score-thresh 0.5] [--device cpu] [--batch-size 4] [--tta]
    detector-predict --weights model.xml --input path/to/images --output predictions/ [--precision bf16]

--weights also takes an exported file (detector-export): ONNX (run by onnxruntime), OpenVINO
.xml (OpenVINO) or TorchScript, told apart by content; its class names come from the file.

Writes DIR/predictions.json ({file_name, bbox [x, y, w, h], score, category_id,
category_name} per detection, and a mask model's "segmentation": a COCO RLE), DIR/<image>.png
with the boxes drawn (class names and scores: COCO's for the published COCO detectors; a mask
model's masks filled translucently under them), and the folder's detections in COCO
results format: DIR/coco_instances_results.json, with DIR/coco_images.json giving each
image id's file (ids are the file names' numbers for COCO-named files such as
000000000139.jpg, else 1, 2, ... in name order).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint written by tools/train_net.py (or convert_weights.py), a published "
                        "name such as torchvision://fasterrcnn_resnet50_fpn_v2 (docs/model_zoo.md), or an exported "
                        ".onnx, .xml (OpenVINO) or TorchScript file (docs/deployment.md)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True,
                        help="folder for predictions.json, coco_instances_results.json and the drawn images")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="keep detections scoring at least this")
    parser.add_argument("--device", default="auto",
                        help="auto (the default: CUDA when present, else the CPU), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per forward pass; a batch holds images the model resizes to one padded size, "
                             "so the detections equal those of batch 1")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="an exported OpenVINO file's inference precision (its INFERENCE_PRECISION_HINT)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: flipped and rescaled views merged (the checkpoint's test.aug_*)")
    args = parser.parse_args(argv)

    from detector.weights.checkpoint_io import CheckpointError
    from detector.tasks.prediction import COCO_RESULTS_NAME, list_images, predict_images
    from detector.utils.logger import setup_logger

    setup_logger(None)
    try:
        images = list_images(args.input)
        predictions = predict_images(args.weights, images, args.output, args.score_thresh, args.device, tta=args.tta,
                                     batch_size=args.batch_size, precision=args.precision)
    except (FileNotFoundError, CheckpointError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(predictions)} detections in {len(images)} images -> {Path(args.output) / 'predictions.json'}, "
          f"{Path(args.output) / COCO_RESULTS_NAME}")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
