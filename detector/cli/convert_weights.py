"""Convert torchvision or Detectron2 weights into a checkpoint of this project.

`detector-convert`, or `python tools/convert_weights.py` with the same arguments:

    detector-convert --source torchvision --input fasterrcnn.pth --output out.pth
    detector-convert --source torchvision --input resnet50.pth --output r50.pth   # backbone
    detector-convert --source detectron2 --input model_final_280758.pkl --output d2.pth
    detector-convert --source torchvision --input torchvision://fasterrcnn_resnet50_fpn --output tv.pth --num-classes 3
    detector-convert --source detectron2 --input detectron2://ImageNetPretrained/MSRA/R-50 --output r50_msra.pth
    detector-convert --source torchvision --input torchvision://maskrcnn_resnet50_fpn --output mask.pth  # Mask R-CNN
    detector-convert --source detectron2 --input detectron2://Misc/cascade_mask_rcnn_R_50_FPN_3x --output cascade.pth
    detector-convert --source checkpoint --input model_final.pth --output model.safetensors  # export
    detector-convert --source checkpoint --input model.safetensors --output model.pth        # import

The output carries its config: `load_model(OUT)` or `model.weights=OUT` needs nothing else.
An OUT ending in .safetensors is written as safetensors (no pickle at all), with a checksum of
its tensors that every load verifies.
Input files are never unpickled: .pth through torch.load(weights_only=True), .pkl through
a restricted unpickler; a file that would run code is refused with an error.
"""
from __future__ import annotations

import argparse
import logging
import sys

from detector.weights.convert import SOURCES, convert_weights
from detector.weights.restricted_pickle import RestrictedPickleError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--input", required=True, help="torchvision .pth state dict (Faster/Mask R-CNN or ResNet), "
                                                       "Detectron2 .pkl (Faster/Mask/Cascade R-CNN or MSRA ResNet), (checkpoint) "
                                                       "a .pth/.safetensors checkpoint of this project, or a published "
                                                       "name: torchvision://... or detectron2://... (docs/model_zoo.md)")
    parser.add_argument("--output", required=True, help="checkpoint to write (.pth, or .safetensors)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="foreground classes; if it differs from the weights', the class layers (box predictor, "
                             "mask logits) are re-initialized")
    parser.add_argument("--coco80", action="store_true",
                        help="torchvision COCO models: keep only the 80 used category ids (box and mask rows), as labels 1..80 "
                             "(matches dataset=coco2017); default keeps torchvision's 91 outputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = convert_weights(args.source, args.input, args.output, args.num_classes, args.coco80)
    except (ValueError, FileNotFoundError, RuntimeError, RestrictedPickleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
