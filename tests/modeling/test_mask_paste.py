"""Pasting masks into the image the Detectron2 way (detector/modeling/mask_paste.py), against a
reference written here from Detectron2's description (detectron2/layers/mask_ops.py,
_do_paste_mask): each mask's M x M cells span its box's own float coordinates; every image pixel
centre is mapped into that span and the mask is sampled there by grid_sample (bilinear,
align_corners=False, zeros outside); the result is thresholded at 0.5 (>=).

The masks are crisp (logits of +-10 over a random shape), as a trained model's mostly are, and
the boxes are not whole pixels, so where the two pastings put a mask edge shows in the IoU.
"""
import pytest
import torch
import torch.nn.functional as F

from detector.modeling.mask_paste import MASK_PASTE_CHOICES, paste_masks

HEIGHT, WIDTH = 83, 117
MASK_SIZE = 28


def detectron2_reference_paste(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One mask at a time: grid_sample over the box's own coordinates at the pixel centres of the
    whole image. Probabilities [N, height, width] (Detectron2 then keeps >= 0.5)."""
    pasted = []
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
        ys = ((torch.arange(height, dtype=torch.float32) + 0.5) - y0) / (y1 - y0) * 2 - 1
        xs = ((torch.arange(width, dtype=torch.float32) + 0.5) - x0) / (x1 - x0) * 2 - 1
        grid = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1)
        sampled = F.grid_sample(mask[None].float(), grid[None], mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        pasted.append(sampled[0, 0])
    return torch.stack(pasted)


def crisp_masks(count: int, generator: torch.Generator) -> torch.Tensor:
    """[count, 1, 28, 28] probabilities of +-10 logits over a random blob (smooth noise > 0)."""
    noise = F.interpolate(torch.randn(count, 1, 5, 5, generator=generator), size=(MASK_SIZE, MASK_SIZE),
                          mode="bicubic", align_corners=False)
    return torch.sigmoid(torch.where(noise > 0, 10.0, -10.0))


def fractional_boxes(count: int, generator: torch.Generator) -> torch.Tensor:
    """Boxes of 8 to 60 px with fractional corners, some crossing the image border."""
    size = torch.rand(count, 2, generator=generator) * 52 + 8
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([WIDTH, HEIGHT]) - size / 4
    boxes = torch.cat([corner, corner + size], dim=1)
    assert (boxes.frac() != 0).all()
    return boxes


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    union = (a | b).flatten(1).sum(1)
    return (a & b).flatten(1).sum(1) / union.clamp(min=1)


def test_detectron2_paste_matches_detectron2s_algorithm_and_torchvision_paste_does_not():
    generator = torch.Generator().manual_seed(0)
    boxes = fractional_boxes(40, generator)
    masks = crisp_masks(len(boxes), generator)
    probabilities = detectron2_reference_paste(masks, boxes, HEIGHT, WIDTH)
    reference = probabilities >= 0.5
    ours = paste_masks(masks, boxes, (HEIGHT, WIDTH), "detectron2")
    assert ours.shape == (len(boxes), 1, HEIGHT, WIDTH)
    ious = mask_iou(ours[:, 0] >= 0.5, reference)
    visible = reference.flatten(1).any(1)
    assert visible.sum() >= 30, "most pasted masks should show in the image"
    assert (ious[visible] >= 0.98).all(), ious
    # Not only after the threshold: the probabilities are the reference's up to float rounding.
    torch.testing.assert_close(ours[:, 0], probabilities, atol=1e-5, rtol=0)

    # The torchvision way (zero border, grown box truncated to pixels) puts the edges elsewhere:
    # what this setting exists for, and what makes the checks above able to fail.
    theirs = mask_iou(paste_masks(masks, boxes, (HEIGHT, WIDTH), "torchvision")[:, 0] >= 0.5, reference)[visible]
    assert theirs.median() < 0.95 and theirs.min() < 0.9, theirs
    print(f"IoU with Detectron2's paste: detectron2 way min {ious[visible].min():.4f}; torchvision way median "
          f"{theirs.median():.3f}, min {theirs.min():.3f}")


def test_detectron2_paste_edge_cases():
    masks = torch.ones(3, 1, MASK_SIZE, MASK_SIZE)
    boxes = torch.tensor([[10.0, 10.0, 10.0, 30.0],     # no width: covers no pixel centre
                          [-50.0, -50.0, -10.0, -10.0],  # outside the image
                          [0.0, 0.0, WIDTH, HEIGHT]])   # the whole image: every pixel sampled inside
    pasted = paste_masks(masks, boxes, (HEIGHT, WIDTH), "detectron2")
    assert torch.isfinite(pasted).all()
    assert pasted[0].eq(0).all() and pasted[1].eq(0).all()
    # Cells span the box exactly, so the image's corner pixel centre (0.5, 0.5) lies outside the
    # first cell's centre by 1/2 - 0.5 / cell, along each axis, and blends with the zeros beyond:
    # the weight of that cell is 1/2 + 0.5 / cell per axis (cells of 117/28 and 83/28 px).
    corner = (0.5 + 0.5 * MASK_SIZE / WIDTH) * (0.5 + 0.5 * MASK_SIZE / HEIGHT)
    assert pasted[2, 0, HEIGHT // 2, WIDTH // 2] == 1.0
    assert pasted[2, 0, 0, 0].item() == pytest.approx(corner, abs=1e-6)
    assert pasted[2, 0, -1, -1].item() == pytest.approx(corner, abs=1e-6)
    assert paste_masks(masks[:0], boxes[:0], (HEIGHT, WIDTH), "detectron2").shape == (0, 1, HEIGHT, WIDTH)


def test_an_unknown_paste_mode_names_the_key():
    with pytest.raises(ValueError, match=r"model.roi_heads.mask_paste='mmdet'.*torchvision, detectron2"):
        paste_masks(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (10, 10), "mmdet")
    assert MASK_PASTE_CHOICES == ("torchvision", "detectron2")


def tiny_mask_model(name: str, mask_paste: str):
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config([f"model={name}", "backbone=resnet18_narrow", "model.num_classes=3", "model.fpn.out_channels=32",
                       "model.roi_heads.fc_dim=64", "model.roi_heads.conv_dim=16", "model.input.min_size_test=96",
                       "model.input.max_size_test=160", "model.roi_heads.score_thresh=0.0",
                       "model.roi_heads.detections_per_img=20", f"model.roi_heads.mask_paste={mask_paste}"])
    model = build_model(cfg).eval()
    # Mask logits wide enough to give masks with edges (the training init keeps them near 0.5).
    torch.nn.init.normal_(model.roi_heads.mask_predictor.mask_fcn_logits.weight, std=3.0)
    return model


@pytest.mark.parametrize("name", ["mask_rcnn_fpn", "cascade_mask_rcnn_fpn"])
def test_a_model_set_to_detectron2_pastes_its_masks_the_detectron2_way(name):
    """model.roi_heads.mask_paste reaches the model's postprocess, which eval, predict, TTA and the
    export wrapper all go through: the masks the model returns are its 28x28 probabilities pasted
    the Detectron2 way at its final boxes."""
    model = tiny_mask_model(name, "detectron2")
    assert model.roi_heads.mask_paste == "detectron2"
    image = torch.rand(3, 70, 110, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = model([image])[0]
        batch = model.preprocessor([image])
        detections, _ = model.detect(batch.tensor, batch.image_sizes, batch.padded_size)
        box_masks = detections[0]["masks"].clone()
        pasted = model.postprocess(detections, batch.image_sizes, batch.original_sizes)[0]
    assert len(output["boxes"]) > 5 and box_masks.shape[-2:] == (MASK_SIZE, MASK_SIZE)
    torch.testing.assert_close(pasted["masks"], output["masks"], atol=0, rtol=0)
    reference = detectron2_reference_paste(box_masks, output["boxes"], 70, 110) >= 0.5
    visible = reference.flatten(1).any(1)
    assert visible.sum() > 5
    ious = mask_iou(output["masks"][:, 0] >= 0.5, reference)[visible]
    assert (ious >= 0.98).all(), ious
    # The same weights set to torchvision's paste give other masks for the same boxes.
    torchvision_way = tiny_mask_model(name, "torchvision")
    with torch.no_grad():
        other = torchvision_way([image])[0]
    torch.testing.assert_close(other["boxes"], output["boxes"], atol=0, rtol=0)
    assert mask_iou(other["masks"][:, 0] >= 0.5, reference)[visible].min() < 0.95


def test_a_bad_mask_paste_in_the_config_is_refused_when_building():
    with pytest.raises(ValueError, match="model.roi_heads.mask_paste='grid'"):
        tiny_mask_model("mask_rcnn_fpn", "grid")
