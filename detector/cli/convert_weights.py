"""Convert torchvision or Detectron2 weights (or those of any registered weights source) into a
checkpoint of this project.

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

The --source choices are the registered weights sources (detector/weights/conversion/registry.py):
the built-in ones and those that installed packages declare (docs/extending.md, "A new weights
source"). A published name as --input is fetched and hash checked first (detector/weights/zoo.py).
"""
from __future__ import annotations

import argparse
import logging
import sys

from detector.weights.conversion.convert import convert_weights
from detector.weights.conversion.registry import registered_sources, source_names
from detector.weights.formats.restricted_pickle import RestrictedPickleError
from detector.weights.zoo import publisher_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, choices=source_names(),
                        help="; ".join(f"{source.name}: {source.files}" for source in registered_sources()))
    parser.add_argument("--input", required=True, help="a file of the --source, or a published name: torchvision://... "
                                                       "or detectron2://... (docs/model_zoo.md)")
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
        path = convert_weights(args.source, publisher_file(args.input, args.source), args.output, args.num_classes,
                               args.coco80)
    except (ValueError, FileNotFoundError, RuntimeError, RestrictedPickleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def run() -> None:
    """The console command: exits with main()'s status."""
    sys.exit(main())
