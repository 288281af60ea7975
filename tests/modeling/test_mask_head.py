"""Mask R-CNN's mask branch against torchvision's, with the same random weights and inputs."""
import pytest
import torch
from torch import nn
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from detector.modeling.box_coder import BoxCoder
from detector.modeling.box_predictor import BoxPredictor
from detector.modeling.mask_branch import mask_probabilities
from detector.modeling.mask_head import MaskHead, MaskPredictor
from detector.modeling.mask_loss import mask_loss
from detector.modeling.mask_paste import paste_masks_in_image
from detector.modeling.mask_roi_heads import MaskRoIHeads
from detector.modeling.matcher import Matcher
from detector.modeling.poolers import MultiLevelRoIAlign
from detector.modeling.roi_heads import FCBoxHead
from detector.modeling.sampler import BalancedSampler


def randomize(module: nn.Module, seed: int) -> None:
    """Every parameter and BatchNorm statistic random, so no mapping error hides behind zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.1
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)


@pytest.mark.parametrize("norm", ["", "bn"])
@pytest.mark.parametrize("fold_norms", [False, True])
def test_mask_head_and_predictor_load_torchvision_state_dicts_and_agree(norm, fold_norms):
    torch.manual_seed(0)
    tv_head = MaskRCNNHeads(16, [8, 8, 8, 8], 1, norm_layer=nn.BatchNorm2d if norm else None).eval()
    tv_predictor = MaskRCNNPredictor(8, 6, 4).eval()
    randomize(tv_head, 1)
    randomize(tv_predictor, 2)
    head = MaskHead(16, conv_dim=8, norm=norm, fold_norms=fold_norms).eval()
    predictor = MaskPredictor(8, num_classes=3, deconv_dim=6).eval()
    # Same keys, same shapes: torchvision's roi_heads.mask_head/mask_predictor load 1:1.
    head.load_state_dict(tv_head.state_dict(), strict=True)
    predictor.load_state_dict(tv_predictor.state_dict(), strict=True)
    features = torch.randn(5, 16, 14, 14)
    with torch.no_grad():
        expected = tv_predictor(tv_head(features))
        actual = predictor(head(features))
    assert actual.shape == (5, 4, 28, 28)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_detectron2_layout_has_no_background_channel_and_indexes_by_label():
    predictor = MaskPredictor(8, num_classes=3, deconv_dim=6, layout="detectron2")
    assert predictor.mask_fcn_logits.out_channels == 3
    randomize(predictor, 3)
    with torch.no_grad():
        logits = predictor(torch.randn(2, 8, 14, 14))
        raw = predictor.mask_fcn_logits(torch.relu(predictor.conv5_mask(torch.randn(0, 8, 14, 14))))
    assert raw.shape[1] == 3 and logits.shape == (2, 4, 28, 28)
    assert logits[:, 0].eq(0).all() and logits[:, 1:].ne(0).any()
    with pytest.raises(ValueError, match="predictor_layout='mmdet'"):
        MaskPredictor(8, 3, layout="mmdet")


def random_boxes(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.8, height * 0.8])
    size = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.5, height * 0.5]) + 2.0
    return torch.cat([corner, corner + size], dim=1)


def test_mask_loss_matches_torchvision():
    generator = torch.Generator().manual_seed(0)
    proposals, gt_masks, gt_labels, matched = [], [], [], []
    for count, num_gt in ((7, 3), (4, 2), (0, 1)):
        proposals.append(random_boxes(count, 40, 50, generator))
        gt_masks.append((torch.rand(num_gt, 40, 50, generator=generator) > 0.5).to(torch.uint8))
        gt_labels.append(torch.randint(1, 4, (num_gt,), generator=generator))
        matched.append(torch.randint(0, num_gt, (count,), generator=generator))
    logits = torch.randn(11, 4, 28, 28, generator=generator, requires_grad=True)
    expected = tv_roi_heads.maskrcnn_loss(logits, proposals, gt_masks, gt_labels, matched)
    actual = mask_loss(logits, proposals, gt_masks, gt_labels, matched)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)
    actual.backward()
    # Only the ground-truth class's channel of each proposal gets a gradient.
    assert logits.grad[:7, 0].eq(0).all() and logits.grad.ne(0).any()


def test_mask_loss_without_positives_is_zero_and_keeps_the_graph():
    logits = torch.randn(0, 4, 28, 28, requires_grad=True)
    loss = mask_loss(logits, [torch.zeros(0, 4)], [torch.zeros(2, 10, 10)], [torch.tensor([1, 2])],
                     [torch.zeros(0, dtype=torch.int64)])
    assert loss.item() == 0.0 and loss.requires_grad


def test_mask_probabilities_match_torchvision():
    logits = torch.randn(5, 4, 28, 28)
    labels = [torch.tensor([1, 3]), torch.tensor([2, 2, 1])]
    expected = tv_roi_heads.maskrcnn_inference(logits, labels)
    actual = mask_probabilities(logits, labels)
    assert [a.shape for a in actual] == [(2, 1, 28, 28), (3, 1, 28, 28)]
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


def test_paste_matches_torchvision_including_edges_and_tiny_boxes():
    generator = torch.Generator().manual_seed(0)
    height, width = 67, 91
    boxes = torch.cat([
        random_boxes(20, height, width, generator),
        torch.tensor([[0.0, 0.0, width, height],          # the whole image: expanded past every edge
                      [80.3, 60.2, 91.0, 67.0],            # bottom-right corner
                      [10.0, 10.0, 10.4, 10.3],            # under a pixel
                      [-3.0, 5.0, 20.0, 9.0]]),            # starts left of the image
    ])
    masks = torch.rand(len(boxes), 1, 28, 28, generator=generator)
    expected = tv_roi_heads.paste_masks_in_image(masks, boxes, (height, width))
    actual = paste_masks_in_image(masks, boxes, (height, width))
    assert actual.shape == (len(boxes), 1, height, width)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    # Every box that overlaps the image by a pixel gets a mask there.
    assert (actual.flatten(1).amax(dim=1)[:-2] > 0).all()
    assert paste_masks_in_image(masks[:0], boxes[:0], (height, width)).shape == (0, 1, height, width)


def make_heads(in_channels=8, num_classes=3, seed=0):
    """Ours and torchvision's RoI heads with masks, tiny, sharing random weights."""
    torch.manual_seed(seed)
    strides = [4, 8, 16, 32]
    ours = MaskRoIHeads(
        MultiLevelRoIAlign(7, strides), FCBoxHead(in_channels, 7, fc_dim=32), BoxPredictor(32, num_classes),
        BoxCoder([10.0, 10.0, 5.0, 5.0]), Matcher(0.5, 0.5), BalancedSampler(32, 0.25),
        mask_pooler=MultiLevelRoIAlign(14, strides),
        mask_head=MaskHead(in_channels, conv_dim=8),
        mask_predictor=MaskPredictor(8, num_classes, deconv_dim=8),
        score_thresh=0.0, detections_per_img=20)
    names = ["0", "1", "2", "3"]
    theirs = tv_roi_heads.RoIHeads(
        MultiScaleRoIAlign(names, 7, 2), TwoMLPHead(in_channels * 49, 32), FastRCNNPredictor(32, num_classes + 1),
        0.5, 0.5, 32, 0.25, (10.0, 10.0, 5.0, 5.0), 0.0, 0.5, 20,
        mask_roi_pool=MultiScaleRoIAlign(names, 14, 2), mask_head=MaskRCNNHeads(in_channels, [8] * 4, 1),
        mask_predictor=MaskRCNNPredictor(8, 8, num_classes + 1))
    randomize(theirs, seed + 1)
    state = {k.replace("box_head.fc6", "box_head.fc1").replace("box_head.fc7", "box_head.fc2"): v
             for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return ours, theirs


def pyramid(image_size=(64, 80), channels=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, channels, image_size[0] // s, image_size[1] // s, generator=generator)
            for s in (4, 8, 16, 32)]


def test_mask_roi_heads_infer_the_same_boxes_and_masks_as_torchvision():
    ours, theirs = make_heads()
    ours.eval(), theirs.eval()
    features = pyramid()
    generator = torch.Generator().manual_seed(5)
    proposals = [random_boxes(30, 64, 80, generator), random_boxes(25, 64, 80, generator)]
    sizes = [(64, 80), (60, 72)]
    with torch.no_grad():
        expected, _ = theirs({str(i): f for i, f in enumerate(features)}, proposals, sizes)
        actual, losses = ours(features, proposals, sizes)
    assert losses == {}
    for a, e in zip(actual, expected):
        assert set(a) == {"boxes", "scores", "labels", "masks"} and len(a["boxes"]) > 0
        torch.testing.assert_close(a["boxes"], e["boxes"], atol=1e-4, rtol=0)
        assert torch.equal(a["labels"], e["labels"])
        assert a["masks"].shape == (len(a["boxes"]), 1, 28, 28)
        torch.testing.assert_close(a["masks"], e["masks"], atol=1e-5, rtol=0)


def square_targets():
    """Two objects per image; each mask is a disc inside its box, so the box is not the mask."""
    targets = []
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(80.0), indexing="ij")
    for shift in (0.0, 6.0):
        boxes = torch.tensor([[8.0 + shift, 10.0, 40.0 + shift, 42.0], [44.0, 20.0 - shift, 76.0, 52.0 - shift]])
        masks = torch.stack([((xs - (b[0] + b[2]) / 2) ** 2 + (ys - (b[1] + b[3]) / 2) ** 2 <= 14.0**2)
                             for b in boxes]).to(torch.uint8)
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks})
    return targets


def test_mask_roi_heads_train_one_step_and_infer_masks():
    ours, _ = make_heads()
    ours.train()
    features = [f.requires_grad_() for f in pyramid()]
    targets = square_targets()
    generator = torch.Generator().manual_seed(1)
    proposals = [torch.cat([random_boxes(40, 64, 80, generator), t["boxes"] + 1.5]) for t in targets]
    detections, losses = ours(features, proposals, [(64, 80), (64, 80)], targets)
    assert detections == [] and set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0
    sum(losses.values()).backward()
    assert ours.mask_head[0][0].weight.grad.abs().sum() > 0
    assert ours.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
    ours.eval()
    with torch.no_grad():
        detections, _ = ours(pyramid(), proposals, [(64, 80), (64, 80)])
    for d in detections:
        assert d["masks"].shape == (len(d["boxes"]), 1, 28, 28)
        assert ((d["masks"] >= 0) & (d["masks"] <= 1)).all()


def test_matched_ground_truth_is_the_samplers_assignment():
    ours, _ = make_heads()
    ours.train()
    targets = square_targets()
    generator = torch.Generator().manual_seed(2)
    proposals = [random_boxes(60, 64, 80, generator) for _ in targets]
    sampled, labels, _ = ours.sample_proposals(proposals, targets)
    for image_proposals, image_labels, target in zip(sampled, labels.split([len(p) for p in sampled]), targets):
        matched = ours.matched_ground_truth(image_proposals, image_labels, target)
        positive = image_labels > 0
        assert positive.any() and matched[~positive].eq(-1).all()
        # Each positive's class is its ground truth's, and that ground truth overlaps it most.
        assert torch.equal(target["labels"][matched[positive]], image_labels[positive])
        iou = tv_roi_heads.box_ops.box_iou(target["boxes"], image_proposals[positive])
        assert torch.equal(iou.argmax(dim=0), matched[positive])


def test_training_without_masks_names_what_is_missing():
    ours, _ = make_heads()
    ours.train()
    targets = [{"boxes": torch.tensor([[1.0, 1, 20, 20]]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError, match="has no 'masks'"):
        ours(pyramid(), [torch.tensor([[0.0, 0, 18, 22]])], [(64, 80)], targets)


def test_a_detector_with_mask_heads_trains_and_returns_pasted_masks_in_input_pixels(make_small_config):
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    # model.roi_heads of Mask R-CNN: the box branch's keys plus the mask branch's.
    model = build_model(make_small_config(
        "model.input.min_size_test=64", "model.input.max_size_test=100", "model.roi_heads.score_thresh=0.0",
        "model.roi_heads.detections_per_img=10", "model.roi_heads._target_=detector.modeling.mask_roi_heads.mask_roi_heads",
        "+model.roi_heads.mask_head={_target_:detector.modeling.mask_head.MaskHead,conv_dim:16}",
        "+model.roi_heads.mask_pooler_resolution=14", "+model.roi_heads.mask_deconv_dim=16"))
    heads = model.roi_heads
    assert isinstance(heads, MaskRoIHeads) and heads.mask_pooler.output_size == (14, 14)
    assert heads.mask_predictor.mask_fcn_logits.out_channels == 3 and heads.mask_predictor.conv5_mask.out_channels == 16
    model.train()
    targets = square_targets()
    for t in targets:
        t["labels"] = torch.tensor([1, 2])
    images = [torch.rand(3, 64, 80) for _ in targets]
    losses = model(images, targets)
    assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    images = [torch.rand(3, 90, 150), torch.rand(3, 200, 60)]
    with torch.no_grad():
        outputs = model(images)
    for output, image in zip(outputs, images):
        assert len(output["boxes"]) > 0
        assert output["masks"].shape == (len(output["boxes"]), 1) + tuple(image.shape[-2:])
        assert ((output["masks"] >= 0) & (output["masks"] <= 1)).all()
        # Nothing is pasted outside a (padded) detected box.
        for mask, b in zip(output["masks"][:, 0], output["boxes"]):
            ys, xs = torch.nonzero(mask > 0, as_tuple=True)
            if len(xs):
                pad_x, pad_y = (b[2] - b[0]) / 28 + 1, (b[3] - b[1]) / 28 + 1
                assert xs.min() >= b[0] - pad_x and xs.max() <= b[2] + pad_x
                assert ys.min() >= b[1] - pad_y and ys.max() <= b[3] + pad_y


MASK_HEADS = ["model.roi_heads._target_=detector.modeling.mask_roi_heads.mask_roi_heads",
              "+model.roi_heads.mask_head={_target_:detector.modeling.mask_head.MaskHead}",
              "+model.roi_heads.mask_pooler_resolution=14", "+model.roi_heads.mask_deconv_dim=256"]


def test_same_weights_same_boxes_and_masks_as_torchvision_maskrcnn(coco128):
    """torchvision's MaskRCNN (ResNet-18 FPN, FrozenBatchNorm, random weights) and ours with its
    state dict: box keys renamed as for Faster R-CNN, mask keys 1:1. Exact path, real photos."""
    from torchvision.io import ImageReadMode, read_image
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from detector.benchmarking.peers import spread_random_weights_
    from detector.config import load_config
    from detector.modeling.build import build_model
    from detector.weights.conversion.torchvision_conversion import rename_torchvision_detection

    torch.manual_seed(0)
    reference = MaskRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=5, min_size=320,
                         max_size=512, box_score_thresh=0.0).eval()
    spread_random_weights_(reference, seed=3)
    ours = build_model(load_config([
        "schedule=1x", "backbone=resnet18", "backbone.norm=frozen_bn", "model.num_classes=4", "model.channels_last=false",
        "model.fold_norms=false", "model.input.min_size_test=320", "model.input.max_size_test=512",
        "model.roi_heads.score_thresh=0.0", *MASK_HEADS])).eval()
    state = reference.state_dict()
    masks = {k: v for k, v in state.items() if k.startswith(("roi_heads.mask_head.", "roi_heads.mask_predictor."))}
    boxes = rename_torchvision_detection({k: v for k, v in state.items() if k not in masks})
    ours.load_state_dict({**boxes, **masks}, strict=True)
    image = read_image(str(coco128 / "train2017" / "000000000508.jpg"), mode=ImageReadMode.RGB).float() / 255
    with torch.no_grad():
        expected = reference([image])[0]
        actual = ours([image])[0]
    assert len(actual["boxes"]) == len(expected["boxes"]) > 0
    torch.testing.assert_close(actual["boxes"], expected["boxes"], atol=1e-2, rtol=0)
    assert torch.equal(actual["labels"], expected["labels"])
    assert actual["masks"].shape == expected["masks"].shape == (len(expected["boxes"]), 1) + tuple(image.shape[-2:])
    torch.testing.assert_close(actual["masks"], expected["masks"], atol=1e-4, rtol=0)
    # What evaluation sees: the masks thresholded at 0.5, IoU per detection.
    ours_binary, theirs_binary = actual["masks"][:, 0] >= 0.5, expected["masks"][:, 0] >= 0.5
    union = (ours_binary | theirs_binary).flatten(1).sum(1)
    iou = (ours_binary & theirs_binary).flatten(1).sum(1) / union.clamp(min=1)
    assert (iou[union > 0] >= 0.99).all()
    print(f"Mask R-CNN parity (R18-FPN, 000000000508.jpg at 320): {len(actual['boxes'])} detections, max box diff "
          f"{(actual['boxes'] - expected['boxes']).abs().max().item():.3g} px, max mask diff "
          f"{(actual['masks'] - expected['masks']).abs().max().item():.3g}, min mask IoU {iou[union > 0].min().item():.4f}")


def test_images_without_detections_get_empty_masks():
    ours, _ = make_heads()
    ours.eval()
    with torch.no_grad():
        detections, _ = ours(pyramid(), [torch.zeros(0, 4), torch.zeros(0, 4)], [(64, 80), (64, 80)])
    assert [d["masks"].shape for d in detections] == [(0, 1, 28, 28)] * 2
