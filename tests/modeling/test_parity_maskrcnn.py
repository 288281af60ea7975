"""Same weights, same boxes and masks: this model's Mask R-CNN against torchvision's
maskrcnn_resnet50_fpn (the acceptance test of issue 15).

torchvision's model is built without weights, its backbone's BatchNorm2d swapped for
FrozenBatchNorm2d (what maskrcnn_resnet50_fpn uses whenever it starts from trained weights),
given reproducible random weights, saved, converted with tools/convert_weights.py's library
function, loaded with load_model on the exact path, and both run in eval mode on coco128
photographs. Boxes must agree to 1e-2 px; every matched detection's pasted mask, thresholded
at 0.5, must overlap torchvision's with IoU >= 0.99. `pytest -s` prints the figures.
"""
import torch
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.ops import FrozenBatchNorm2d

from detector.benchmarking.peers import spread_random_weights_ as randomize_
from detector.weights.conversion.convert import convert_weights
from detector.weights.loading import load_model

from .test_parity_torchvision import EXACT, PHOTOS, photos

# torchvision's detection tests run at small sizes; 320 keeps two R50 photos (and 100 pasted
# masks each) within seconds on a shared CPU while the 640x427 photos are still downscaled.
MIN_SIZE = 320
MASK_THRESHOLD = 0.5
MIN_MASK_IOU = 0.99
MAX_BOX_DIFF = 1e-2


def freeze_batchnorm_(module: nn.Module) -> None:
    """Every BatchNorm2d below `module` replaced by torchvision's FrozenBatchNorm2d, statistics kept."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for buffer in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, buffer).copy_(getattr(child, buffer).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm_(child)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each pair of binary masks [N, H, W] (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def test_maskrcnn_resnet50_fpn_same_boxes_and_masks(coco128, tmp_path):
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=MIN_SIZE, box_score_thresh=0.0)
    freeze_batchnorm_(reference.backbone.body)
    randomize_(reference, seed=0)
    with torch.no_grad():
        # Random box regressors at full scale shrink most boxes below a pixel (exp of large
        # negative deltas), and a sub-pixel box pastes an empty mask: tenfold smaller deltas
        # keep the detections near their anchors' sizes, so most masks cover pixels to compare.
        for layer in (reference.rpn.head.bbox_pred, reference.roi_heads.box_predictor.bbox_pred):
            layer.weight.mul_(0.1)
            layer.bias.mul_(0.1)
    reference.eval()
    torch.save(reference.state_dict(), tmp_path / "torchvision.pth")
    convert_weights("torchvision", tmp_path / "torchvision.pth", tmp_path / "converted.pth")
    ours = load_model(tmp_path / "converted.pth",
                      overrides=["model.roi_heads.score_thresh=0.0", f"model.input.min_size_test={MIN_SIZE}", *EXACT])
    assert ours.config.model.name == "mask_rcnn_fpn" and ours.config.backbone.norm == "frozen_bn"
    assert ours.num_classes == 90 and not ours.channels_last and not ours.backbone.body.fold_norms

    images = photos(coco128, 2)
    with torch.no_grad():
        expected = reference(images)
        actual = ours(images)
    box_diffs, ious, detections = [], [], 0
    for index, (image, ref, mine) in enumerate(zip(images, expected, actual)):
        assert len(ref["boxes"]) > 0 and ref["boxes"].shape == mine["boxes"].shape
        torch.testing.assert_close(mine["boxes"], ref["boxes"], atol=MAX_BOX_DIFF, rtol=0)
        torch.testing.assert_close(mine["scores"], ref["scores"], atol=1e-4, rtol=0)
        assert torch.equal(mine["labels"], ref["labels"])
        # Same order (checked above), so detection i matches detection i.
        height, width = image.shape[-2:]
        assert mine["masks"].shape == ref["masks"].shape == (len(ref["boxes"]), 1, height, width)
        iou = mask_iou(mine["masks"][:, 0] > MASK_THRESHOLD, ref["masks"][:, 0] > MASK_THRESHOLD)
        # The masks are not trivial: most cover some pixels, none covers the whole image.
        areas = (ref["masks"][:, 0] > MASK_THRESHOLD).flatten(1).sum(1)
        assert (areas > 0).float().mean() > 0.5 and bool((areas < height * width).all())
        box_diffs.append((mine["boxes"] - ref["boxes"]).abs().max().item())
        ious.append(iou.min().item())
        detections += len(ref["boxes"])
        print(f"Mask R-CNN parity, photo {PHOTOS[index]} ({width}x{height}, min_size {MIN_SIZE}): "
              f"{len(mine['boxes'])} detections (torchvision {len(ref['boxes'])}), max box diff {box_diffs[-1]:.3g} px, "
              f"min mask IoU {ious[-1]:.6f}, mean mask IoU {iou.mean().item():.6f}, max mask probability diff "
              f"{(mine['masks'] - ref['masks']).abs().max().item():.3g}")
        assert iou.min().item() >= MIN_MASK_IOU
    print(f"Mask R-CNN parity overall: {len(images)} photos, {detections} matched detections, "
          f"max box diff {max(box_diffs):.3g} px, min mask IoU {min(ious):.6f}")


def test_mask_rcnn_v2_layout_on_resnet18_exact_path(coco128, tmp_path):
    """maskrcnn_resnet50_fpn_v2's heads (BatchNorm FPN, 2-conv RPN head, 4conv1fc box head, mask
    convs with BatchNorm) as torchvision assembles them, on a ResNet-18 to keep it quick: the
    converted checkpoint names model=mask_rcnn_fpn_v2 and gives the same boxes and masks."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

    from .test_parity_torchvision import torchvision_v2_layout

    torch.manual_seed(18)
    box_model = torchvision_v2_layout(18, num_classes=5)
    reference = MaskRCNN(box_model.backbone, num_classes=5, rpn_head=box_model.rpn.head,
                         box_head=box_model.roi_heads.box_head, min_size=MIN_SIZE, box_score_thresh=0.0,
                         rpn_post_nms_top_n_test=300,
                         mask_head=MaskRCNNHeads(256, [256] * 4, 1, norm_layer=nn.BatchNorm2d))
    randomize_(reference, seed=18)
    with torch.no_grad():
        for layer in (reference.rpn.head.bbox_pred, reference.roi_heads.box_predictor.bbox_pred):
            layer.weight.mul_(0.1)
            layer.bias.mul_(0.1)
    reference.eval()
    torch.save(reference.state_dict(), tmp_path / "torchvision_v2.pth")
    convert_weights("torchvision", tmp_path / "torchvision_v2.pth", tmp_path / "converted_v2.pth")
    ours = load_model(tmp_path / "converted_v2.pth",
                      overrides=["model.roi_heads.score_thresh=0.0", f"model.input.min_size_test={MIN_SIZE}",
                                 "model.rpn.post_nms_topk_test=300", *EXACT])
    assert ours.config.model.name == "mask_rcnn_fpn_v2" and ours.config.model.roi_heads.mask_head.norm == "bn"
    image = photos(coco128, 1)
    with torch.no_grad():
        ref, mine = reference(image)[0], ours(image)[0]
    assert len(ref["boxes"]) > 0 and ref["boxes"].shape == mine["boxes"].shape
    torch.testing.assert_close(mine["boxes"], ref["boxes"], atol=MAX_BOX_DIFF, rtol=0)
    assert torch.equal(mine["labels"], ref["labels"])
    iou = mask_iou(mine["masks"][:, 0] > MASK_THRESHOLD, ref["masks"][:, 0] > MASK_THRESHOLD)
    assert ((ref["masks"][:, 0] > MASK_THRESHOLD).flatten(1).sum(1) > 0).float().mean() > 0.5
    print(f"Mask R-CNN v2 layout (ResNet-18) parity, photo {PHOTOS[0]}: {len(mine['boxes'])} detections, max box diff "
          f"{(mine['boxes'] - ref['boxes']).abs().max().item():.3g} px, min mask IoU {iou.min().item():.6f}")
    assert iou.min().item() >= MIN_MASK_IOU
