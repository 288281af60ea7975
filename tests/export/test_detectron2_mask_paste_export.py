"""A mask model set to Detectron2's pasting (model.roi_heads.mask_paste=detectron2, what its
converted weights carry) exports with that pasting: the ONNX graph (onnxruntime) returns the eager
model's masks at input sizes other than the trace's, and those masks are not the torchvision
pasting's; the pasting traced alone (as TorchScript's export traces it) fits any size and count.

Tiny random-init ResNet-18 Mask R-CNN, its mask logits widened (std 1) so the masks have edges.
"""
from __future__ import annotations

import warnings

import torch

MASK_TOL = 1e-4   # probability, as tests/export/test_masks.py
BOX_TOL = 1e-3    # pixels
SIZES = [(130, 190), (210, 150)]


def tiny_model(mask_paste: str):
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config(["model=mask_rcnn_fpn", "backbone=resnet18_narrow", "model.num_classes=3",
                       "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64", "model.roi_heads.conv_dim=16",
                       "model.input.min_size_test=160", "model.input.max_size_test=256",
                       "model.roi_heads.score_thresh=0.0", "model.roi_heads.detections_per_img=12",
                       "model.rpn.pre_nms_topk_test=300", "model.rpn.post_nms_topk_test=300",
                       f"model.roi_heads.mask_paste={mask_paste}"])
    model = build_model(cfg).eval()
    torch.nn.init.normal_(model.roi_heads.mask_predictor.mask_fcn_logits.weight, std=1.0)
    return model


def images():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand((3, *size), generator=generator) for size in SIZES]


def exported_onnx(model, directory):
    import onnxruntime

    from detector.export import ExportableDetector, example_image, export_onnx

    path = directory / "model.onnx"
    export_onnx(ExportableDetector(model), example_image(), path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda image: [torch.as_tensor(x) for x in session.run(None, {"image": image.numpy()})]


def test_detectron2_pasting_exports_to_onnx(tmp_path):
    model = tiny_model("detectron2")
    torchvision_way = tiny_model("torchvision")
    run = exported_onnx(model, tmp_path)
    for image in images():
        with torch.no_grad():
            expected = model([image])[0]
            other = torchvision_way([image])[0]
        boxes, scores, labels, masks = run(image)
        n = len(expected["boxes"])
        assert n > 3 and masks.shape == (n, 1, *image.shape[1:])
        # Scores of random weights can tie; pair each eager detection with the exported one of its box.
        pair = ((expected["boxes"][:, None] - boxes[None]).abs().amax(-1)
                + (expected["labels"][:, None] != labels[None]) * 1e9).argmin(1)
        assert len(set(pair.tolist())) == n
        assert (expected["boxes"] - boxes[pair]).abs().max() <= BOX_TOL
        assert (expected["masks"] - masks[pair]).abs().max() <= MASK_TOL
        assert expected["masks"].max() > 0.9 and (expected["masks"] > 0.5).sum() > 100
        # The exported pasting is Detectron2's, not torchvision's: the two differ on these boxes.
        assert torch.equal(other["boxes"], expected["boxes"])
        assert (other["masks"] - masks[pair]).abs().max() > 0.1


class Paste(torch.nn.Module):
    def forward(self, masks: torch.Tensor, boxes: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        from detector.export.wrapper import size_of
        from detector.modeling.mask_paste import paste_masks

        return paste_masks(masks, boxes, torch.stack([size_of(image, 1), size_of(image, 2)]), "detectron2")


def test_detectron2_pasting_traces_for_any_image_size_and_detection_count():
    """TorchScript traces the same eval forward as ONNX; the pasting alone, traced once, serves
    other image sizes and mask counts (nothing frozen at the trace's values)."""
    generator = torch.Generator().manual_seed(2)

    def inputs(count, height, width):
        corner = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) * 0.7
        boxes = torch.cat([corner, corner + torch.rand(count, 2, generator=generator) * 40 + 3], dim=1)
        return torch.rand(count, 1, 28, 28, generator=generator), boxes, torch.zeros(3, height, width)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)   # torch.jit.trace's deprecation notice
        traced = torch.jit.trace(Paste(), inputs(5, 60, 90))
    for count, height, width in ((3, 47, 71), (9, 100, 64), (0, 30, 30)):
        masks, boxes, image = inputs(count, height, width)
        expected = Paste()(masks, boxes, image)
        actual = traced(masks, boxes, image)
        assert actual.shape == (count, 1, height, width)
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
