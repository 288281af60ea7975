import math

import pytest
import torch

from detector.modeling.anchor_generator import AnchorGenerator
from detector.modeling.box_coder import BoxCoder
from detector.modeling.matcher import Matcher
from detector.modeling.poolers import MultiLevelRoIAlign
from detector.modeling.box_predictor import BoxPredictor
from detector.modeling.sampler import BalancedSampler


def test_cell_anchors_have_size_area_and_ratio():
    generator = AnchorGenerator([32], [0.5, 1.0, 2.0], round_anchors=False)
    cell = generator.cell_anchors(32, torch.float32, torch.device("cpu"))
    widths, heights = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    torch.testing.assert_close(widths * heights, torch.full((3,), 32.0**2))
    torch.testing.assert_close(heights / widths, torch.tensor([0.5, 1.0, 2.0]))
    rounded = AnchorGenerator([32], [0.5, 1.0, 2.0], round_anchors=True).cell_anchors(32, torch.float32, "cpu")
    assert torch.equal(rounded, rounded.round()) and not torch.equal(rounded, cell)


def test_anchor_grid_order_strides_and_cache():
    generator = AnchorGenerator([8, 16], [1.0], round_anchors=True)
    anchors = generator([(2, 3), (1, 2)], image_size=(8, 12))
    assert [a.shape[0] for a in anchors] == [6, 2]
    # Row-major locations, stride = image size // feature size.
    centres = (anchors[0][:, :2] + anchors[0][:, 2:]) / 2
    assert centres.tolist() == [[0, 0], [4, 0], [8, 0], [0, 4], [4, 4], [8, 4]]
    assert generator([(2, 3), (1, 2)], image_size=(8, 12))[0] is anchors[0]
    fixed = AnchorGenerator([8, 16], [1.0], strides=[4, 8])([(2, 3), (1, 2)], image_size=(8, 12))
    assert ((fixed[1][1, :2] + fixed[1][1, 2:]) / 2).tolist() == [8, 0]


def test_box_coder_round_trip_and_clamp():
    coder = BoxCoder([10.0, 10.0, 5.0, 5.0])
    references = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 50.0, 40.0]])
    targets = torch.tensor([[1.0, 2.0, 12.0, 18.0], [0.0, 10.0, 60.0, 30.0]])
    decoded = coder.decode(coder.encode(targets, references), references)
    torch.testing.assert_close(decoded[:, 0], targets)
    huge = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    width = coder.decode(huge, references[:1])[0, 0]
    assert math.isclose(float(width[2] - width[0]), 10.0 * 1000 / 16, rel_tol=1e-4)


def test_matcher_thresholds_and_low_quality_matches():
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.0],
                        [0.0, 0.2, 0.35, 0.1]])
    strict = Matcher(0.7, 0.3, allow_low_quality_matches=False)(iou)
    assert strict.tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD]
    # Ground truth 1 has no match above 0.7; its best prediction (index 2) becomes positive.
    lenient = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert lenient.tolist() == [0, Matcher.BETWEEN_THRESHOLDS, 1, Matcher.BELOW_LOW_THRESHOLD]
    empty = Matcher(0.7, 0.3)(torch.zeros((0, 5)))
    assert empty.tolist() == [Matcher.BELOW_LOW_THRESHOLD] * 5


def test_sampler_balances_and_caps():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    positive, negative = BalancedSampler(32, 0.25)(labels)
    assert len(positive) == 8 and len(negative) == 24
    assert (labels[positive] == 1).all() and (labels[negative] == 0).all()
    few = torch.tensor([2, 0, 0, -1])
    positive, negative = BalancedSampler(32, 0.25)(few)
    assert len(positive) == 1 and len(negative) == 2


def test_pooler_assigns_canonical_levels():
    pooler = MultiLevelRoIAlign(7, [4, 8, 16, 32])
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 448, 448], [0, 0, 2000, 2000]],
                         dtype=torch.float32)
    assert pooler.assign_levels(boxes).tolist() == [0, 1, 2, 3, 3]
    features = [torch.full((2, 4, 256 // s, 256 // s), float(s)) for s in (4, 8, 16, 32)]
    pooled = pooler(features, [boxes[:1], boxes[2:3]])
    assert pooled.shape == (2, 4, 7, 7)
    assert pooled[0].eq(4.0).all() and pooled[1].eq(16.0).all()


def test_detectron2_predictor_layout_is_background_last():
    predictor = BoxPredictor(8, num_classes=3, layout="detectron2")
    assert predictor.cls_score.out_features == 4 and predictor.bbox_pred.out_features == 12
    x = torch.randn(5, 8)
    logits, deltas = predictor(x)
    raw_logits, raw_deltas = predictor.cls_score(x), predictor.bbox_pred(x)
    torch.testing.assert_close(logits[:, 0], raw_logits[:, 3])        # background moved first
    torch.testing.assert_close(logits[:, 1:], raw_logits[:, :3])
    assert deltas.shape == (5, 16) and deltas[:, :4].eq(0).all()
    torch.testing.assert_close(deltas[:, 4:], raw_deltas)


@pytest.mark.parametrize("layout", ["torchvision", "detectron2"])
def test_class_agnostic_predictor_has_one_box_per_proposal(layout):
    predictor = BoxPredictor(8, num_classes=3, layout=layout, class_agnostic=True)
    assert predictor.cls_score.out_features == 4 and predictor.bbox_pred.out_features == 4
    x = torch.randn(5, 8)
    logits, deltas = predictor(x)
    raw_logits = predictor.cls_score(x)
    background = 3 if layout == "detectron2" else 0
    torch.testing.assert_close(logits[:, 0], raw_logits[:, background])
    torch.testing.assert_close(deltas, predictor.bbox_pred(x))
