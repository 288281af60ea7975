"""Keypoint models export with their keypoints: the traced TorchScript file and the ONNX graph
(run by onnxruntime) return boxes, scores, labels, keypoints [N, K, 3] and keypoints_scores
[N, K] equal to the eager model([image])[0], at input sizes and detection counts other than the
trace's (the heatmap decoding is a loop over however many detections an image has).

The model is a tiny random-init ResNet-18 Keypoint R-CNN whose last keypoint layer is steeper
than its init, so every heatmap has one clear peak to find (a flat one is decided by rounding).
"""
from __future__ import annotations

import pytest
import torch

from .test_masks import load_torchscript, sample_images

BOX_TOL = 1e-3      # pixels
SCORE_TOL = 1e-4
KEYPOINT_TOL = 1e-3  # pixels
SCORE_THRESH = 0.26
NUM_KEYPOINTS = 5
OUTPUTS = ["boxes", "scores", "labels", "keypoints", "keypoints_scores"]


def tiny_keypoint_model(score_thresh: float):
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config(["model=keypoint_rcnn_fpn", "backbone=resnet18_narrow", "model.num_classes=3",
                       "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64", "model.input.min_size_test=160",
                       "model.input.max_size_test=256", f"model.roi_heads.score_thresh={score_thresh}",
                       "model.roi_heads.detections_per_img=30", "model.rpn.pre_nms_topk_test=300",
                       "model.rpn.post_nms_topk_test=300", "model.roi_heads.keypoint_head.conv_dim=16",
                       "model.roi_heads.keypoint_head.num_convs=2",
                       f"model.roi_heads.keypoint_head.num_keypoints={NUM_KEYPOINTS}"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.roi_heads.keypoint_predictor.kps_score_lowres.weight.mul_(20.0)
    return model


def load_onnx(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == OUTPUTS
    return lambda image: session.run(None, {"image": image.numpy()})


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_keypoint_rcnn_exports_keypoints(fmt, tmp_path):
    from detector.export import ExportableDetector, example_image, export_onnx, export_torchscript

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    model = tiny_keypoint_model(SCORE_THRESH)
    wrapper = ExportableDetector(model)
    assert list(wrapper.output_names) == OUTPUTS
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    (export_onnx if fmt == "onnx" else export_torchscript)(wrapper, example_image(), path)
    run = load_onnx(path) if fmt == "onnx" else load_torchscript(path)
    counts = []
    for image in sample_images():
        with torch.no_grad():
            expected = model([image])[0]
        boxes, scores, labels, keypoints, keypoint_scores = (torch.as_tensor(x) for x in run(image))
        n = len(expected["scores"])
        counts.append(n)
        assert keypoints.shape == (n, NUM_KEYPOINTS, 3) and keypoint_scores.shape == (n, NUM_KEYPOINTS)
        # Same ranking here (a tiny model's scores are not tied at this threshold): row i is row i.
        assert torch.equal(labels, expected["labels"])
        assert float((boxes - expected["boxes"]).abs().max()) <= BOX_TOL
        assert float((scores - expected["scores"]).abs().max()) <= SCORE_TOL
        assert float((keypoints - expected["keypoints"]).abs().max()) <= KEYPOINT_TOL
        # torchvision's keypoint score is a heatmap logit (here tens to hundreds): relative rounding.
        torch.testing.assert_close(keypoint_scores, expected["keypoints_scores"], rtol=1e-5, atol=SCORE_TOL)
        # Keypoints spread inside their boxes (not all at one corner).
        assert float(expected["keypoints"][..., 0].std()) > 1.0
    assert min(counts) > 0 and len(set(counts)) > 1, f"detection counts {counts} should differ"
