"""Same weights, same detections: model=fcos_fpn against torchvision's fcos_resnet50_fpn on coco128
photographs, exact path (the random weights made to behave like trained ones, the conversion and
the tolerances of test_retinanet_parity.py)."""
import torch
from torch import nn
from torchvision.models.detection import fcos_resnet50_fpn

from tests.modeling.test_parity_torchvision import photos
from tests.modeling.test_retinanet_parity import assert_top_detections_match, behave_trained_, converted


def test_fcos_resnet50_fpn(coco128, tmp_path):
    images = photos(coco128, 2)
    # score_thresh 0.05 (torchvision's FCOS default: 0.2) so that random weights leave 90 detections.
    reference = fcos_resnet50_fpn(weights=None, weights_backbone=None, min_size=384, score_thresh=0.05)
    # Distances to the edges in strides: ReLU(~1 +- 0.3) -- boxes a few strides wide.
    behave_trained_(reference, images, seed=3, box_scale=0.3, box_bias=1.0)
    ours = converted(reference, tmp_path, ["model.input.min_size_test=384", "backbone.norm=bn",
                                           "model.postprocess.score_thresh=0.05"])
    assert ours.config.model.name == "fcos_fpn" and ours.num_classes == 90
    assert ours.head.centerness is not None and isinstance(ours.head.box_convs[3][1], nn.GroupNorm)
    assert ours.head.box_convs[0][0].bias is not None
    for line in assert_top_detections_match(reference, ours, images):
        print("fcos_resnet50_fpn parity:", line)
