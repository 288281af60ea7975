"""detector.export.wrapper: its preprocessing reproduces the model's exactly, and the rest is the
model's own eval forward (FasterRCNN.detect / postprocess), so eager outputs are identical."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

# (input h, w) -> resized to short side 320, long side at most 512; includes sizes where
# h * scale lands within float32 rounding of a whole number (428 -> 320, 200 -> 320).
SIZES = [(480, 640), (428, 640), (640, 481), (200, 300), (100, 2000), (2000, 90), (7, 7), (333, 333), (1, 5)]


@pytest.mark.parametrize("size, out", [((480, 640), (320, 426)), ((428, 640), (320, 478)), ((20, 30), (320, 480)),
                                       ((2000, 90), (512, 23)), ((7, 7), (320, 320)), ((1, 5), (3, 9)),
                                       ((333, 333), (333, 333))])
def test_bilinear_resize_equals_interpolate(size, out):
    from detector.export.wrapper import bilinear_resize

    generator = torch.Generator().manual_seed(0)
    image = torch.rand((3, *size), generator=generator)
    expected = F.interpolate(image[None], size=out, mode="bilinear", align_corners=False)[0]
    got = bilinear_resize(image, torch.tensor(out[0]), torch.tensor(out[1]))
    assert got.shape == expected.shape
    # Float rounding of the final weighted sum only; a tap or weight off by one float32 ulp
    # of the source coordinate already gives ~3e-5 (see linear_taps).
    assert (got - expected).abs().max() <= 1e-6


def test_resize_gives_the_model_sizes_and_pixels():
    from detector.export.wrapper import ExportableDetector
    from detector.modeling.preprocessing import ImagePreprocessor

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.preprocessor = ImagePreprocessor([0.485, 0.456, 0.406], [0.229, 0.224, 0.225],
                                                  min_size_test=320, max_size_test=512).eval()

    wrapper = ExportableDetector(Stub())
    for portable in (False, True):
        wrapper.portable_resize = portable
        for h, w in SIZES:
            image = torch.rand(3, h, w)
            expected = wrapper.model.preprocessor.resize(image)
            got, size = wrapper.resize(image)
            assert tuple(got.shape) == tuple(expected.shape), (h, w, portable)
            assert size.tolist() == list(expected.shape[1:])
            assert (got - expected).abs().max() <= 1e-6


def tiny_model(*overrides):
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config(["backbone=resnet18", "model.num_classes=3", "model.fpn.out_channels=32",
                       "model.roi_heads.fc_dim=64", "model.input.min_size_test=160", "model.input.max_size_test=256",
                       "model.roi_heads.score_thresh=0.0", "model.roi_heads.detections_per_img=30", *overrides])
    return build_model(cfg).eval()


def test_adapter_runs_the_model_own_eval_forward():
    """Eagerly the adapter gives exactly model([image])[0]: after its preprocessing it runs the
    model's own detect and postprocess, with sizes as tensors (as in a trace), and a change to
    the model's post-processing settings shows in its output."""
    from detector.export.wrapper import ExportableDetector

    model = tiny_model()
    wrapper = ExportableDetector(model)
    for size in [(120, 170), (201, 97)]:
        image = torch.rand(3, *size)
        with torch.no_grad():
            expected = model([image])[0]
            boxes, scores, labels = wrapper(image)
        assert len(scores) == 30
        assert torch.equal(boxes, expected["boxes"]) and torch.equal(scores, expected["scores"])
        assert torch.equal(labels, expected["labels"])
    model.roi_heads.detections_per_img = 7
    with torch.no_grad():
        assert len(wrapper(torch.rand(3, 100, 90))[1]) == 7


def test_cascade_model_exports_through_its_own_heads(tmp_path):
    """Nothing in the export knows the RoI heads: a Cascade R-CNN (three box stages) traces
    through its own inference and, at another image size, gives its eager detections."""
    import warnings

    import torchvision  # noqa: F401  (nms / roi_align for the loaded graph)

    from detector.export import ExportableDetector, example_image, export_torchscript

    model = tiny_model("model=cascade_rcnn_fpn")
    export_torchscript(ExportableDetector(model), example_image(), tmp_path / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.load(str(tmp_path / "model.pt"))
    image = torch.rand((3, 150, 230), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model([image])[0]
        boxes, scores, labels = traced(image)
    assert len(scores) == len(expected["scores"]) == 30
    # Channels-last features pool with a sparse product eagerly, torchvision's kernel traced.
    assert (boxes - expected["boxes"]).abs().max() <= 1e-3
    assert (scores - expected["scores"]).abs().max() <= 1e-4
    assert torch.equal(labels, expected["labels"])
