"""The keypoint branch's parts: heatmap targets (cells, the edge rule, what is not valid), the
spatial cross-entropy, the two decodings (torchvision's logit score, Detectron2's probability),
and a training step that reaches the keypoint head."""
import math

import pytest
import torch
import torch.nn.functional as F

from detector.modeling.keypoint_decoding import heatmaps_to_keypoints, keypoint_loss, keypoints_to_heatmap_targets

from .conftest import small_config


def test_heatmap_targets_cells_edges_and_validity():
    rois = torch.tensor([[0.0, 0.0, 56.0, 28.0]])
    keypoints = torch.tensor([[[0.0, 0.0, 2], [56.0, 28.0, 2], [28.5, 14.2, 1], [10.0, 10.0, 0], [60.0, 5.0, 2]]])
    cells, valid = keypoints_to_heatmap_targets(keypoints, rois, 56)
    # (0, 0) -> cell 0; the far corner is the last cell (not one past); x scales by 1, y by 2.
    assert cells[0, :3].tolist() == [0, 56 * 56 - 1, 28 * 56 + 28]
    # Not labelled (v=0) and outside the roi: not valid, and their cell is 0.
    assert valid[0].tolist() == [True, True, True, False, False] and cells[0, 3:].tolist() == [0, 0]


def test_keypoint_loss_is_the_spatial_cross_entropy_of_valid_keypoints():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    rois = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 16.0, 16.0]])]
    gt = [torch.tensor([[[1.0, 2.0, 2], [5.0, 5.0, 0], [7.5, 0.5, 2]]])]
    loss = keypoint_loss(logits, rois, gt, [torch.tensor([0, 0])])
    cells = torch.tensor([[2 * 8 + 1, 0, 0 * 8 + 7], [1 * 8 + 0, 0, 0 * 8 + 3]])
    flat = logits.reshape(2, 3, 64)
    expected = torch.stack([F.cross_entropy(flat[r, k][None], cells[r, k][None])
                            for r in range(2) for k in (0, 2)]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert keypoint_loss(logits, rois, [gt[0][:, :, :] * torch.tensor([1.0, 1.0, 0.0])],
                         [torch.tensor([0, 0])]).item() == 0.0


def test_the_two_decodings_share_positions_and_differ_in_the_score():
    maps = torch.full((1, 2, 4, 4), -5.0)
    maps[0, 0, 1, 2] = 3.0          # one clear peak
    maps[0, 1, 3, 0] = 1.0
    rois = torch.tensor([[10.0, 20.0, 18.0, 28.0]])   # 8 x 8 px: the maps are resized to it
    points_tv, scores_tv = heatmaps_to_keypoints(maps, rois, "torchvision")
    points_d2, scores_d2 = heatmaps_to_keypoints(maps, rois, "detectron2")
    assert torch.equal(points_tv, points_d2)
    upsampled = F.interpolate(maps[0][:, None], size=(8, 8), mode="bicubic", align_corners=False)[:, 0]
    for k in range(2):
        flat = upsampled[k].reshape(-1)
        y, x = divmod(int(flat.argmax()), 8)
        assert points_tv[0, k].tolist() == pytest.approx([10 + x + 0.5, 20 + y + 0.5, 1.0])
        assert scores_tv[0, k].item() == pytest.approx(flat.max().item())
        # Detectron2: exp(0) at the peak over the pooled map's sum of exp(logit - peak).
        expected = 1.0 / torch.exp(maps[0, k] - flat.max()).sum().item()
        assert scores_d2[0, k].item() == pytest.approx(expected, rel=1e-6)
    # A probability-like score (it may pass 1 where bicubic overshoot lifts the peak above the pooled cells).
    assert 0 < scores_d2.min() and not math.isclose(scores_tv[0, 0], scores_d2[0, 0])


def test_a_training_step_reaches_the_keypoint_head():
    cfg = small_config("model=keypoint_rcnn_fpn", "model.roi_heads.keypoint_head.num_keypoints=3",
                       "model.roi_heads.keypoint_head.conv_dim=16", "model.roi_heads.keypoint_head.num_convs=2")
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    model = build_model(cfg).train()
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1]),
                "keypoints": torch.tensor([[[20.0, 12.0, 2], [60.0, 40.0, 2], [35.0, 70.0, 1]]])}]
    losses = model([torch.rand(3, 96, 96)], targets)
    assert losses["loss_keypoint"].item() == pytest.approx(math.log(56 * 56), rel=0.2)
    sum(losses.values()).backward()
    assert model.roi_heads.keypoint_predictor.kps_score_lowres.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="has no 'keypoints'"):
        model([torch.rand(3, 96, 96)], [{"boxes": targets[0]["boxes"], "labels": targets[0]["labels"]}])
