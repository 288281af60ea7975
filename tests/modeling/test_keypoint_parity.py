"""Same weights, same boxes and keypoints: this project's Keypoint R-CNN against torchvision's
keypointrcnn_resnet50_fpn (issue 28's acceptance test).

torchvision's model is built without weights, its backbone's BatchNorm2d swapped for
FrozenBatchNorm2d (what keypointrcnn_resnet50_fpn uses whenever it starts from trained weights),
given reproducible random weights spread like trained ones, saved, converted with
tools/convert_weights.py's library function, loaded with load_model on the exact path, and both
run in eval mode on coco128 photographs. Boxes and keypoints must agree to 1e-2 px, labels
exactly, box and keypoint scores to 1e-4. `pytest -s` prints the figures.
"""
import torch
from torchvision.models.detection import keypointrcnn_resnet50_fpn

from detector.benchmarking.peers import spread_random_weights_ as randomize_
from detector.weights.conversion.convert import convert_weights
from detector.weights.loading import load_model

from .test_parity_maskrcnn import freeze_batchnorm_
from .test_parity_torchvision import EXACT, PHOTOS, photos

# Small photos and few detections: each detection runs eight 512-channel convs on 14x14, the
# costliest part of the model on a shared CPU.
MIN_SIZE = 320
DETECTIONS = 20
MAX_DIFF_PX = 1e-2
MAX_SCORE_DIFF = 1e-4


def test_keypointrcnn_resnet50_fpn_same_boxes_and_keypoints(coco128, tmp_path):
    reference = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=MIN_SIZE,
                                          box_score_thresh=0.0, box_detections_per_img=DETECTIONS)
    freeze_batchnorm_(reference.backbone.body)
    randomize_(reference, seed=0)
    with torch.no_grad():
        # Tenfold smaller box deltas keep detections near their anchors' sizes (random regressors
        # at full scale shrink most boxes below a pixel); a steeper last keypoint layer gives each
        # heatmap one clear peak, as a trained head's, so the arg-max is not decided by rounding.
        for layer in (reference.rpn.head.bbox_pred, reference.roi_heads.box_predictor.bbox_pred):
            layer.weight.mul_(0.1)
            layer.bias.mul_(0.1)
        reference.roi_heads.keypoint_predictor.kps_score_lowres.weight.mul_(10.0)
    reference.eval()
    torch.save(reference.state_dict(), tmp_path / "torchvision.pth")
    convert_weights("torchvision", tmp_path / "torchvision.pth", tmp_path / "converted.pth")
    ours = load_model(tmp_path / "converted.pth",
                      overrides=["model.roi_heads.score_thresh=0.0", f"model.input.min_size_test={MIN_SIZE}",
                                 f"model.roi_heads.detections_per_img={DETECTIONS}", *EXACT])
    assert ours.config.model.name == "keypoint_rcnn_fpn" and ours.config.backbone.norm == "frozen_bn"
    assert ours.num_classes == 1 and ours.config.model.class_names == ["person"]
    assert ours.config.model.roi_heads.keypoint_head.num_keypoints == 17
    assert ours.config.model.roi_heads.keypoint_decoding == "torchvision"

    images = photos(coco128, 2)
    with torch.no_grad():
        expected = reference(images)
        actual = ours(images)
    for index, (image, ref, mine) in enumerate(zip(images, expected, actual)):
        assert len(ref["boxes"]) == DETECTIONS and ref["boxes"].shape == mine["boxes"].shape
        torch.testing.assert_close(mine["boxes"], ref["boxes"], atol=MAX_DIFF_PX, rtol=0)
        torch.testing.assert_close(mine["scores"], ref["scores"], atol=MAX_SCORE_DIFF, rtol=0)
        assert torch.equal(mine["labels"], ref["labels"])
        assert mine["keypoints"].shape == ref["keypoints"].shape == (DETECTIONS, 17, 3)
        torch.testing.assert_close(mine["keypoints"], ref["keypoints"], atol=MAX_DIFF_PX, rtol=0)
        torch.testing.assert_close(mine["keypoints_scores"], ref["keypoints_scores"], atol=MAX_SCORE_DIFF, rtol=0)
        # Not trivial: keypoints spread over their boxes, scores differ between keypoints.
        spread = ref["keypoints"][..., 0].std(dim=1)
        assert (spread > 1).float().mean() > 0.5 and ref["keypoints_scores"].std() > 0.1
        height, width = image.shape[-2:]
        print(f"Keypoint R-CNN parity, photo {PHOTOS[index]} ({width}x{height}, min_size {MIN_SIZE}): "
              f"{len(mine['boxes'])} detections, max box diff {(mine['boxes'] - ref['boxes']).abs().max().item():.3g} px, "
              f"max keypoint diff {(mine['keypoints'] - ref['keypoints']).abs().max().item():.3g} px, max keypoint "
              f"score diff {(mine['keypoints_scores'] - ref['keypoints_scores']).abs().max().item():.3g}")
