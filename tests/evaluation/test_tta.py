"""Test-time augmentation: exact flip mapping, scale changes, merging, config."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detector.evaluation.tta import TestTimeAugmentation, build_tta, weighted_box_fusion
from detector.modeling.boxes import hflip_boxes


class _Sizes:
    def __init__(self, min_size_test: int, max_size_test: int):
        self.min_size_test, self.max_size_test = min_size_test, max_size_test


class BrightRegionDetector(nn.Module):
    """A detector whose answer is known: one box, exactly around the pixels brighter than
    0.5 in the red channel, with a score that depends on the image content (so the mirrored
    view scores differently). It records the test size it was asked to run at."""

    def __init__(self):
        super().__init__()
        self.preprocessor = _Sizes(100, 200)
        self.seen_sizes: list[tuple[int, int]] = []

    def forward(self, images):
        self.seen_sizes.append((self.preprocessor.min_size_test, self.preprocessor.max_size_test))
        outputs = []
        for image in images:
            ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            score = image[1, :, : image.shape[-1] // 2].mean().clamp(0.01, 1.0).reshape(1)
            outputs.append({"boxes": box, "scores": score, "labels": torch.tensor([1])})
        return outputs


def _image_with_rectangle(height=40, width=60, box=(7, 5, 20, 30)) -> torch.Tensor:
    image = torch.zeros(3, height, width)
    x1, y1, x2, y2 = box
    image[0, y1:y2, x1:x2] = 1.0
    image[1, :, : width // 3] = 0.8  # asymmetric content: the two views score differently
    return image


def test_hflip_boxes_swaps_and_mirrors_edges():
    boxes = torch.tensor([[0.0, 1.0, 10.0, 5.0], [12.5, 0.0, 20.0, 3.0]])
    flipped = hflip_boxes(boxes, 20)
    assert torch.equal(flipped, torch.tensor([[10.0, 1.0, 20.0, 5.0], [0.0, 0.0, 7.5, 3.0]]))
    assert torch.equal(hflip_boxes(flipped, 20), boxes)


@pytest.mark.parametrize("merge", ["nms", "wbf"])
def test_flip_view_maps_back_exactly(merge):
    model = BrightRegionDetector().eval()
    box = (7, 5, 20, 30)
    image = _image_with_rectangle(box=box)
    mirrored_alone = model([image.flip(-1)])[0]["boxes"]
    assert not torch.equal(mirrored_alone, torch.tensor([box], dtype=torch.float32))  # the mirror view differs...
    tta = TestTimeAugmentation(model, scales=[1.0], flip=True, merge=merge).eval()
    out = tta([image])[0]
    # ...yet mapped back it is the same box: NMS keeps one of two exact copies, fusion
    # averages them (exact up to float rounding of the weighted mean).
    truth = torch.tensor([box], dtype=torch.float32)
    if merge == "nms":
        assert torch.equal(out["boxes"], truth)
    else:
        assert torch.allclose(out["boxes"], truth, atol=1e-4)
    assert out["labels"].tolist() == [1]
    single = model([image])[0]["scores"]
    mirror = model([image.flip(-1)])[0]["scores"]
    expected = max(single, mirror) if merge == "nms" else (single + mirror) / 2
    assert torch.allclose(out["scores"], expected)


def test_scales_are_multiples_of_the_model_test_size_and_restored():
    model = BrightRegionDetector().eval()
    tta = TestTimeAugmentation(model, scales=[0.5, 1.0, 1.5], flip=False).eval()
    tta([_image_with_rectangle()])
    assert model.seen_sizes == [(50, 100), (100, 200), (150, 300)]
    assert (model.preprocessor.min_size_test, model.preprocessor.max_size_test) == (100, 200)


def test_scales_need_a_resizable_model():
    class Plain(nn.Module):
        def forward(self, images):
            return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]

    tta = TestTimeAugmentation(Plain(), scales=[1.0, 2.0], flip=False).eval()
    with pytest.raises(ValueError, match="aug_scales=\\[1.0\\]"):
        tta([torch.zeros(3, 8, 8)])
    with pytest.raises(ValueError, match="aug_merge"):
        TestTimeAugmentation(Plain(), merge="vote")


def test_weighted_box_fusion_averages_by_score_and_keeps_classes_apart():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50, 60, 60]])
    scores = torch.tensor([0.75, 0.25, 0.5, 0.4])
    labels = torch.tensor([1, 1, 2, 1])
    fused_boxes, fused_scores, fused_labels = weighted_box_fusion(boxes, scores, labels, num_views=2, iou_thresh=0.55)
    rows = sorted(zip(fused_labels.tolist(), fused_scores.tolist(), fused_boxes.tolist()))
    assert rows[0][0] == 1 and rows[0][1] == pytest.approx(0.2)            # the lone box: 0.4 / 2 views
    assert rows[1][0] == 1 and rows[1][1] == pytest.approx(0.5)            # (0.75 + 0.25) / 2
    assert rows[1][2] == pytest.approx([0.5, 0.0, 10.5, 10.0])             # 0.75 * b0 + 0.25 * b1
    assert rows[2][0] == 2 and rows[2][2] == [0.0, 0.0, 10.0, 10.0]        # another class is not fused


@pytest.fixture(scope="module")
def small_detector():
    torch.manual_seed(0)
    from detector.config import load_config
    from detector.modeling.build import build_model

    cfg = load_config(["backbone=resnet18", "backbone.base_channels=32", "model.num_classes=3",
                       "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64", "model.input.min_size_test=96",
                       "model.input.max_size_test=128", "model.roi_heads.score_thresh=0.0",
                       "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=50",
                       "model.roi_heads.detections_per_img=30", "test.aug=true", "test.aug_scales=[0.75,1.0]"])
    return cfg, build_model(cfg).eval()


def test_config_builds_a_tta_model_with_the_model_post_processing(small_detector):
    cfg, model = small_detector
    tta = build_tta(cfg, model)
    assert isinstance(tta, TestTimeAugmentation) and tta.model is model
    assert tta.scales == [0.75, 1.0] and tta.flip and tta.merge == "wbf" and tta.num_views == 4
    assert tta.nms_thresh == cfg.model.roi_heads.nms_thresh and tta.detections_per_img == 30
    from omegaconf import OmegaConf

    off = OmegaConf.merge(cfg, {"test": {"aug": False}})
    assert build_tta(off, model) is model


def test_real_detector_boxes_inside_image_and_mirror_symmetric(small_detector):
    cfg, model = small_detector
    torch.manual_seed(1)
    image = torch.rand(3, 80, 110)
    tta = TestTimeAugmentation(model, scales=[1.0], flip=True, nms_thresh=0.5, detections_per_img=30, merge="nms").eval()
    with torch.no_grad():
        out = tta([image])[0]
        out_mirror = tta([image.flip(-1)])[0]
        multi = build_tta(cfg, model)([image, image.flip(-1)])
    assert 0 < len(out["boxes"]) <= 30
    for result in (out, *multi):
        boxes = result["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= 110).all() and (boxes[:, 3] <= 80).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    # Flip-only TTA of the mirror image is the mirror of the image's TTA: same views, mirrored.
    assert torch.allclose(out_mirror["scores"], out["scores"])
    assert torch.equal(out_mirror["labels"], out["labels"])
    assert torch.allclose(hflip_boxes(out_mirror["boxes"], 110), out["boxes"], atol=1e-4)


def test_predict_takes_the_tta_settings_the_checkpoint_stores(small_detector, tmp_path, monkeypatch):
    """tools/predict.py --tta: the scales, flip and merge of the checkpoint's own config (which
    conf/'s defaults, 0.875/1/1.125 with flips and wbf, are not), whatever its test.aug says."""
    import cv2
    import numpy as np
    from omegaconf import OmegaConf

    from detector.evaluation import tta as tta_module
    from detector.tasks.prediction import predict_images
    from detector.weights.checkpoint_io import save_checkpoint

    cfg, model = small_detector
    stored = OmegaConf.merge(cfg, {"test": {"aug": False, "aug_scales": [0.75], "aug_flip": True, "aug_merge": "nms"}})
    path = tmp_path / "model.pth"
    save_checkpoint({"model": model.state_dict(), "iteration": 0, "config": OmegaConf.to_container(stored, resolve=True)},
                    path)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 80, 3), 128, np.uint8))
    made = []
    original = tta_module.TestTimeAugmentation.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(tta_module.TestTimeAugmentation, "__init__", recording)
    predict_images(path, [tmp_path / "a.png"], tmp_path / "out", score_thresh=0.0, device="cpu", tta=True)
    assert [(t.scales, t.flip, t.merge) for t in made] == [([0.75], True, "nms")]


def test_a_checkpoint_without_tta_settings_is_named(small_detector):
    from omegaconf import OmegaConf

    from detector.evaluation.tta import checkpoint_tta

    cfg, model = small_detector
    model.config = OmegaConf.create({"model": OmegaConf.to_container(cfg.model), "test": {"aug_scales": [1.0]}})
    try:
        with pytest.raises(ValueError, match=r"the config stored in old.pth has no test.aug_flip"):
            checkpoint_tta(model, "old.pth")
    finally:
        del model.config
