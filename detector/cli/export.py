"""Export a trained detector to ONNX (runs under onnxruntime), OpenVINO IR (.xml + .bin) or
TorchScript (torch.jit.load).

`detector-export`, or `python tools/export.py` with the same arguments:

    detector-export --weights outputs/shapes_resnet18_narrow/checkpoints/model_final.pth \
        --format onnx --output model.onnx
    detector-export --weights CKPT --format openvino --output model.xml \
        [--set model.roi_heads.score_thresh=0.3]

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
    args = parser.parse_args(argv)

    from detector.weights.checkpoint_io import CheckpointError
    from detector.export import export_model

    try:
        output = export_model(args.weights, args.format, args.output, overrides=args.overrides)
    except (CheckpointError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.weights} as {args.format} -> {output}")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
