"""Mask models export with their masks: the traced TorchScript file and the ONNX graph (run by
onnxruntime) return boxes, scores, labels and masks [N, 1, H, W] (probabilities pasted into the
input image) equal to the eager model([image])[0], at input sizes other than the trace's
(480x640) and with detection counts other than the trace's.

The model is a tiny random-init ResNet-18 Mask R-CNN. Its mask logits are re-initialized wider
than the training init (std 0.001, which keeps every probability at 0.5) so the masks have
structure to compare: values across (0, 1), some pixels above 0.5.
"""
from __future__ import annotations

import warnings

import pytest
import torch

BOX_TOL = 1e-3     # pixels, as tests/tools/test_export.py
SCORE_TOL = 1e-4
MASK_TOL = 1e-4    # probability
# The random-init scores cluster around 0.26 to 0.27; the thresholds keeps a different number of
# detections per test image (none at full detections_per_img), so a frozen count would show.
SCORE_THRESH = 0.26
SIZES = [(120, 170), (150, 230), (300, 200)]


def tiny_mask_model(name: str = "mask_rcnn_fpn", score_thresh: float = SCORE_THRESH):
    """A tiny detector (model=name); with a mask head, mask logits wide enough to vary."""
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config([f"model={name}", "backbone=resnet18_narrow", "model.num_classes=3", "model.fpn.out_channels=32",
                       "model.roi_heads.fc_dim=64", "model.roi_heads.conv_dim=16", "model.input.min_size_test=160",
                       "model.input.max_size_test=256", f"model.roi_heads.score_thresh={score_thresh}",
                       "model.roi_heads.detections_per_img=30", "model.rpn.pre_nms_topk_test=300",
                       "model.rpn.post_nms_topk_test=300"])
    model = build_model(cfg).eval()
    if getattr(model.roi_heads, "mask_head", None) is not None:
        torch.nn.init.normal_(model.roi_heads.mask_predictor.mask_fcn_logits.weight, std=1.0)
    return model


def sample_images():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand((3, *size), generator=generator) for size in SIZES]


def load_torchscript(path):
    import torchvision  # noqa: F401  (nms / roi_align for the loaded graph)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path))

    def run(image):
        with torch.no_grad():
            return module(image)
    return run


def load_onnx(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "masks"]
    assert session.get_outputs()[3].shape == ["detections", 1, "height", "width"]
    return lambda image: session.run(None, {"image": image.numpy()})


def export(model, fmt: str, directory):
    from detector.export import ExportableDetector, example_image, export_onnx, export_torchscript

    path = directory / ("model.onnx" if fmt == "onnx" else "model.pt")
    (export_onnx if fmt == "onnx" else export_torchscript)(ExportableDetector(model), example_image(), path)
    return load_onnx(path) if fmt == "onnx" else load_torchscript(path)


def compare(model, run, label: str) -> None:
    """Exported outputs against eager ones on each test image; near-tied scores may swap ranks,
    so each eager detection is paired with the exported one of the same label and closest box."""
    counts = []
    for image in sample_images():
        with torch.no_grad():
            expected = model([image])[0]
        outputs = run(image)
        assert len(outputs) == 4
        boxes, scores, labels, masks = (torch.as_tensor(x) for x in outputs)
        n = len(expected["scores"])
        counts.append(n)
        assert boxes.shape == (n, 4) and scores.shape == (n,) and labels.shape == (n,)
        assert masks.shape == (n, 1, *image.shape[1:]) and masks.dtype == torch.float32
        assert labels.dtype == torch.int64
        box_diff = (expected["boxes"][:, None] - boxes[None]).abs().amax(dim=-1)
        box_diff[expected["labels"][:, None] != labels[None]] = float("inf")
        pair = box_diff.argmin(dim=1)
        assert len(set(pair.tolist())) == n, "two eager detections paired with one exported detection"
        worst_box = float(box_diff[torch.arange(n), pair].max())
        worst_score = float((expected["scores"] - scores[pair]).abs().max())
        worst_mask = float((expected["masks"] - masks[pair]).abs().max())
        assert worst_box <= BOX_TOL and worst_score <= SCORE_TOL and worst_mask <= MASK_TOL, \
            (label, tuple(image.shape), worst_box, worst_score, worst_mask)
        # The comparison means something: masks with structure, some pixels above 0.5.
        assert expected["masks"].max() > 0.9 and (expected["masks"] > 0.5).sum() > 100
        flipped = int(((expected["masks"] > 0.5) != (masks[pair] > 0.5)).sum())
        print(f"{label} {tuple(image.shape[1:])}: {n} detections, max |box diff| {worst_box:.2e} px, "
              f"|score diff| {worst_score:.2e}, |mask diff| {worst_mask:.2e}, thresholded pixels differing {flipped}")
    assert min(counts) > 0 and len(set(counts)) == len(counts), f"detection counts {counts} should all differ"


def thresholded_model(name: str, score_thresh: float):
    """tiny_mask_model at score_thresh, checked to have no candidate score so close to the
    threshold that float rounding in the exported graph could keep or drop it."""
    model = tiny_mask_model(name, score_thresh=0.0)
    with torch.no_grad():
        scores = torch.cat([model([image])[0]["scores"] for image in sample_images()])
    assert (scores - score_thresh).abs().min() > 1e-6
    model.roi_heads.score_thresh = score_thresh
    return model


@pytest.fixture(scope="module")
def mask_model():
    return thresholded_model("mask_rcnn_fpn", SCORE_THRESH)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_mask_rcnn_exports_masks(mask_model, fmt, tmp_path):
    compare(mask_model, export(mask_model, fmt, tmp_path), f"mask_rcnn {fmt}")


def test_cascade_mask_rcnn_exports_masks(tmp_path):
    model = thresholded_model("cascade_mask_rcnn_fpn", 0.2685)
    compare(model, export(model, "onnx", tmp_path), "cascade_mask_rcnn onnx")


def test_no_detections_gives_empty_masks(tmp_path):
    """Nothing passes the threshold: masks [0, 1, H, W] of the input's size, both formats."""
    model = tiny_mask_model(score_thresh=1.0)
    for fmt in ("torchscript", "onnx"):
        run = export(model, fmt, tmp_path)
        for image in sample_images():
            boxes, scores, labels, masks = (torch.as_tensor(x) for x in run(image))
            assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
            assert masks.shape == (0, 1, *image.shape[1:])


def test_output_names():
    """A mask head adds "masks"; box models (Faster R-CNN, box-only Cascade) keep three outputs."""
    from detector.export import ExportableDetector

    for name, masks in [("mask_rcnn_fpn", True), ("cascade_mask_rcnn_fpn", True), ("faster_rcnn_fpn", False),
                        ("cascade_rcnn_fpn", False)]:
        expected = ("boxes", "scores", "labels") + (("masks",) if masks else ())
        assert ExportableDetector(tiny_mask_model(name)).output_names == expected, name


def test_adapter_masks_equal_eager_exactly():
    """Eagerly (no trace) the adapter's masks are exactly model([image])[0]["masks"]."""
    from detector.export import ExportableDetector

    model = tiny_mask_model()
    wrapper = ExportableDetector(model)
    for image in sample_images():
        with torch.no_grad():
            expected = model([image])[0]
            outputs = wrapper(image)
        for name, value in zip(wrapper.output_names, outputs):
            assert torch.equal(value, expected[name]), name
