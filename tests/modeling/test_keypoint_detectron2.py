"""Detectron2 model-zoo Keypoint R-CNN weights (COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x|3x),
checked against Detectron2 itself, as tests/modeling/test_detectron2_conversion.py checks its
Faster/Mask R-CNN.

The keypoint head's parameter names are those Detectron2 registers, read from its source
(github.com/facebookresearch/detectron2), not from this project's converter:

| names | where Detectron2 creates them |
| --- | --- |
| `roi_heads.keypoint_head.conv_fcn{1..8}.{weight,bias}` | modeling/roi_heads/keypoint_head.py `KRCNNConvDeconvUpsampleHead.__init__`: `for idx, layer_channels in enumerate(conv_dims, 1): module = Conv2d(in_channels, layer_channels, 3, stride=1, padding=1); self.add_module("conv_fcn{}".format(idx), module)`; config/defaults.py `ROI_KEYPOINT_HEAD.CONV_DIMS = tuple(512 for _ in range(8))`; forward: `relu(layer(x))` per conv |
| `roi_heads.keypoint_head.score_lowres.{weight,bias}` | same `__init__`: `self.score_lowres = ConvTranspose2d(in_channels, num_keypoints, deconv_kernel, stride=2, padding=deconv_kernel // 2 - 1)` with `deconv_kernel = 4`; forward: `interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)`, `up_scale = 2`; `NUM_KEYPOINTS = 17` |

Decoding (structures/keypoints.py `heatmaps_to_keypoints`, written out again in `detectron2_decode`
below) and `keypoint_rcnn_inference`: `pred_keypoints = keypoint_results[:, :, [0, 1, 3]]` -- x, y and
the softmax score. The box branch is the R-CNN one of the Faster R-CNN test; the recipe
(configs/COCO-Keypoints/Base-Keypoint-RCNN-FPN.yaml): `ROI_HEADS.NUM_CLASSES: 1`,
`ROI_BOX_HEAD.SMOOTH_L1_BETA: 0.5`, `RPN.POST_NMS_TOPK_TRAIN: 1500`; defaults.py
`ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14`, `POOLER_SAMPLING_RATIO = 0`, `POOLER_TYPE = "ROIAlignV2"`.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detector.modeling.keypoint_decoding import heatmaps_to_keypoints
from detector.weights.checkpoint_io import load_checkpoint
from detector.weights.conversion.convert import convert_weights
from detector.weights.loading import load_model

from .test_detectron2_conversion import FPN_DIM, _random_weights, _write_zoo_file, detectron2_faster_rcnn_fpn_shapes

KEYPOINT_DIM = 16      # ROI_KEYPOINT_HEAD.CONV_DIMS (512 in the zoo): narrow keeps the file small
NUM_KEYPOINTS = 17


def detectron2_keypoint_rcnn_shapes() -> dict[str, tuple]:
    shapes = detectron2_faster_rcnn_fpn_shapes(50, num_classes=1)
    channels = FPN_DIM
    for idx in range(1, 9):
        shapes[f"roi_heads.keypoint_head.conv_fcn{idx}.weight"] = (KEYPOINT_DIM, channels, 3, 3)
        shapes[f"roi_heads.keypoint_head.conv_fcn{idx}.bias"] = (KEYPOINT_DIM,)
        channels = KEYPOINT_DIM
    shapes["roi_heads.keypoint_head.score_lowres.weight"] = (KEYPOINT_DIM, NUM_KEYPOINTS, 4, 4)   # [in, out, k, k]
    shapes["roi_heads.keypoint_head.score_lowres.bias"] = (NUM_KEYPOINTS,)
    return shapes


@pytest.fixture(scope="module")
def keypoint_zoo_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("d2keypoints")
    weights = _random_weights(detectron2_keypoint_rcnn_shapes(), seed=7)
    _write_zoo_file(folder / "keypoint_rcnn.pkl", weights)
    convert_weights("detectron2", folder / "keypoint_rcnn.pkl", folder / "keypoint_rcnn.pth")
    model = load_model(folder / "keypoint_rcnn.pth", overrides=["model.input.min_size_test=64",
                                                                "model.input.max_size_test=64",
                                                                "model.roi_heads.score_thresh=0.0"])
    return {k: torch.from_numpy(v) for k, v in weights.items()}, model, load_checkpoint(folder / "keypoint_rcnn.pth")


def test_converted_config_is_detectron2s_keypoint_recipe(keypoint_zoo_model):
    _, model, checkpoint = keypoint_zoo_model
    config = model.config.model
    assert config.name == "keypoint_rcnn_fpn" and model.num_classes == 1 and list(config.class_names) == ["person"]
    assert checkpoint["category_ids"] == [1]
    heads = config.roi_heads
    assert heads.keypoint_decoding == "detectron2" and heads.keypoint_pooler_resolution == 14
    assert heads.keypoint_head.num_keypoints == NUM_KEYPOINTS and heads.keypoint_head.conv_dim == KEYPOINT_DIM
    assert heads.keypoint_head.num_convs == 8 and heads.smooth_l1_beta == 0.5
    assert config.rpn.post_nms_topk_train == 1500
    # ROIAlignV2, sampling ratio 0, for the keypoint pooler as for the box pooler.
    assert model.roi_heads.keypoint_pooler.aligned and model.roi_heads.keypoint_pooler.sampling_ratio == 0
    assert model.roi_heads.keypoint_pooler.output_size == (14, 14)


def detectron2_head(w: dict, features: torch.Tensor) -> torch.Tensor:
    """KRCNNConvDeconvUpsampleHead.forward on pooled features, from the file's arrays."""
    x = features
    for idx in range(1, 9):
        x = F.relu(F.conv2d(x, w[f"roi_heads.keypoint_head.conv_fcn{idx}.weight"],
                            w[f"roi_heads.keypoint_head.conv_fcn{idx}.bias"], padding=1))
    x = F.conv_transpose2d(x, w["roi_heads.keypoint_head.score_lowres.weight"],
                           w["roi_heads.keypoint_head.score_lowres.bias"], stride=2, padding=1)
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def detectron2_decode(maps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """structures/keypoints.py heatmaps_to_keypoints, then [:, :, [0, 1, 3]]: (x, y, score)."""
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    out = maps.new_zeros(len(rois), maps.shape[1], 3)
    idx = torch.arange(maps.shape[1])
    for i in range(len(rois)):
        roi_map = F.interpolate(maps[[i]], size=(int(heights_ceil[i]), int(widths_ceil[i])), mode="bicubic",
                                align_corners=False).squeeze(0)
        max_score, _ = roi_map.view(maps.shape[1], -1).max(1)
        max_score = max_score.view(-1, 1, 1)
        scores = (roi_map - max_score).exp() / (maps[i] - max_score).exp().sum((1, 2), keepdim=True)
        w = roi_map.shape[2]
        pos = roi_map.view(maps.shape[1], -1).argmax(1)
        x_int = pos % w
        y_int = (pos - x_int) // w
        out[i, :, 0] = (x_int.float() + 0.5) * (widths[i] / widths_ceil[i]) + rois[i, 0]
        out[i, :, 1] = (y_int.float() + 0.5) * (heights[i] / heights_ceil[i]) + rois[i, 1]
        out[i, :, 2] = scores[idx, y_int, x_int]
    return out


def test_keypoint_head_and_decoding_compute_what_detectron2_computes(keypoint_zoo_model):
    w, model, _ = keypoint_zoo_model
    features = torch.randn(6, FPN_DIM, 14, 14, generator=torch.Generator().manual_seed(8))
    expected = detectron2_head(w, features)
    with torch.no_grad():
        ours = model.roi_heads.keypoint_predictor(model.roi_heads.keypoint_head(features))
    assert ours.shape == (6, NUM_KEYPOINTS, 56, 56)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    # Boxes of fractional sizes (the resize to ceil(w) x ceil(h) and its correction both matter).
    rois = torch.tensor([[3.2, 4.7, 40.9, 33.1], [0.0, 0.0, 12.5, 61.0], [10.0, 10.0, 10.6, 10.4],
                         [5.5, 2.25, 29.0, 17.75], [1.0, 1.0, 64.0, 64.0], [20.0, 30.0, 27.3, 44.9]])
    reference = detectron2_decode(expected, rois)
    points, scores = heatmaps_to_keypoints(expected, rois, "detectron2")
    torch.testing.assert_close(points[..., :2], reference[..., :2], rtol=0, atol=1e-4)
    torch.testing.assert_close(scores, reference[..., 2], rtol=1e-5, atol=1e-7)
    assert bool((points[..., 2] == 1).all())


def test_converted_keypoint_model_detects_people_with_keypoints(keypoint_zoo_model):
    _, model, _ = keypoint_zoo_model
    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        detections = model([image])[0]
    count = len(detections["boxes"])
    assert 0 < count <= 100 and bool((detections["labels"] == 1).all())
    assert detections["keypoints"].shape == (count, NUM_KEYPOINTS, 3)
    assert detections["keypoints_scores"].shape == (count, NUM_KEYPOINTS)
    # Detectron2's scores are probabilities of a spatial softmax: positive.
    assert float(detections["keypoints_scores"].min()) > 0
    assert np.isfinite(detections["keypoints"].numpy()).all()
