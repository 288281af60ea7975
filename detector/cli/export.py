"""Export a trained detector to ONNX (runs under onnxruntime), OpenVINO IR (.xml + .bin) or
TorchScript (torch.jit.load).

`detector-export`, or `python tools/export.py` with the same arguments:

    detector-export --weights outputs/shapes_resnet18_narrow/checkpoints/model_final.pth \
        --format onnx --output model.onnx
    detector-export --weights CKPT --format openvino --output model.xml \
        [--set model.roi_heads.score_thresh=0.3]
    detector-export --weights CKPT --format openvino --int8 --output model_int8.xml \
        [--calibration dataset=bccd] [--calibration-images 100] [--bias-correction full|fast]

--int8 quantizes the OpenVINO model with NNCF (post-training, int8 convolutions and fully
connected layers; box decoding, RoIAlign and NMS stay float), calibrated on training images of
the checkpoint's own dataset or of the one the --calibration overrides compose, and, where that
dataset has a test split, prints the AP of the int8 file and of the fp32 model.

Each file carries its class names, input format and normalisation, the post-processing baked
into it and the checkpoint's config: detector-predict --weights FILE and train_net eval_only=true
model.weights=FILE use it alone (docs/deployment.md).

The exported model takes one image, float32 [3, H, W] in [0, 1] (RGB, any size), and returns
boxes [N, 4] (x1, y1, x2, y2 in the image's pixels), scores [N] and labels [N] (1..K), and for
a mask model (Mask R-CNN, Cascade Mask R-CNN) masks [N, 1, H, W]: probabilities in the image's
pixels (threshold at 0.5). It includes the model's own resize and normalization, RPN, RoI
heads and NMS (and the mask branch). TorchScript files need `import torchvision` before
`torch.jit.load` (for the nms and roi_align operators).
"""
from __future__ import annotations

import argparse
import sys

FORMATS = ("onnx", "torchscript", "openvino")   # detector.export.FORMATS; repeated so --help needs no torch import


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint written by tools/train_net.py (or convert_weights.py), or a published "
                        "name such as torchvision://fasterrcnn_resnet50_fpn_v2 (docs/model_zoo.md)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx, torchscript or openvino")
    parser.add_argument("--output", required=True, help="file to write, e.g. model.onnx, model.pt or model.xml "
                        "(openvino: its weights go to model.bin beside it)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="model settings to bake in instead of the checkpoint's, e.g. model.roi_heads.score_thresh=0.3")
    parser.add_argument("--int8", action="store_true", help="openvino only: NNCF post-training int8 quantization, "
                        "calibrated on training images (docs/deployment.md)")
    parser.add_argument("--calibration", nargs="+", default=None, metavar="OVERRIDE",
                        help="with --int8: dataset overrides naming the calibration data, e.g. dataset=bccd or "
                        "dataset=auto dataset.path=DIR (default: the checkpoint's own dataset)")
    parser.add_argument("--calibration-images", type=int, default=None, metavar="N",
                        help="with --int8: training images to calibrate on (default 100; seeded choice)")
    parser.add_argument("--bias-correction", choices=("full", "fast"), default=None,
                        help="with --int8: NNCF's bias correction; full (default) keeps more AP, fast quantizes "
                        "several times sooner (for large models and many images)")
    args = parser.parse_args(argv)
    refusal = int8_refusal(args)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2

    from hydra.errors import HydraException   # a bad --calibration override

    from detector.weights.checkpoint_io import CheckpointError
    from detector.export import export_model

    try:
        if args.int8:
            return export_int8_command(args)
        output = export_model(args.weights, args.format, args.output, overrides=args.overrides)
    except (CheckpointError, HydraException, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.weights} as {args.format} -> {output}")
    return 0


def int8_refusal(args) -> str:
    """Why the int8 options cannot apply as given ("" when they can), checked before any work."""
    if args.int8 and args.format != "openvino":
        return (f"--int8 applies to --format openvino (NNCF quantizes the OpenVINO model; ONNX Runtime and "
                f"TorchScript files stay float32), not --format {args.format}. Use --format openvino --int8 "
                "--output NAME.xml, or drop --int8.")
    int8_options = {"--calibration": args.calibration, "--calibration-images": args.calibration_images,
                    "--bias-correction": args.bias_correction}
    given = next((name for name, value in int8_options.items() if value is not None), None)
    if not args.int8 and given:
        return (f"{given} only applies with --int8 (an option of the int8 quantization); add --int8 "
                f"(with --format openvino), or drop {given}.")
    if args.calibration_images is not None and args.calibration_images < 1:
        return f"--calibration-images {args.calibration_images}: give at least 1 training image (default 100)."
    return ""


def export_int8_command(args) -> int:
    from detector.deploy.int8_evaluation import evaluate_int8
    from detector.export.calibration import DEFAULT_IMAGES
    from detector.export.int8 import DEFAULT_BIAS_CORRECTION
    from detector.export.int8_export import export_int8

    report = export_int8(args.weights, args.output, calibration=args.calibration or [],
                         calibration_count=DEFAULT_IMAGES if args.calibration_images is None else args.calibration_images,
                         overrides=args.overrides, evaluate=evaluate_int8, log=print,
                         bias_correction=args.bias_correction or DEFAULT_BIAS_CORRECTION)
    for line in report.lines():
        print(line)
    print(f"exported {args.weights} as openvino int8 -> {report.path}")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
