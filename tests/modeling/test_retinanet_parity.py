"""Same weights, same detections: model=retinanet_fpn / retinanet_fpn_v2 against torchvision's
retinanet_resnet50_fpn / _v2, on coco128 photographs, exact path.

torchvision's model gets random weights made to behave like trained ones (`behave_trained_`):
BatchNorm statistics measured on the photographs themselves, class logits scaled so that scores
spread over (0, 1) rather than all sitting at the prior, the never-trained background column
switched off, box outputs scaled down to plausible deltas. It is saved, converted with
tools/convert_weights.py's library function, loaded with load_model, and both run in eval mode.
Each of torchvision's best 90 detections must have its match here: same label, box within
1e-2 px, score within 1e-4.
"""
import torch
from torch import nn
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from detector.benchmarking.peers import spread_random_weights_
from detector.weights.conversion.convert import convert_weights
from detector.weights.loading import load_model
from tests.modeling.test_parity_torchvision import EXACT, photos

TOP = 90


@torch.no_grad()
def behave_trained_(reference: nn.Module, images: list[torch.Tensor], seed: int, box_scale: float = 0.1,
                    box_bias: float = 0.0, prior_std: float = 0.5) -> None:
    """Random weights with a trained model's statistics (see the module docstring)."""
    spread_random_weights_(reference, seed)
    batch = reference.transform(images)[0].tensors
    # Norm statistics of these images: each BatchNorm's running mean/var := its batch's (momentum 1).
    norms = [m for m in reference.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = 1.0
    reference.backbone.train()
    features = list(reference.backbone(batch).values())
    reference.eval()
    features = list(reference.backbone(batch).values())
    head = reference.head
    classification, regression = head.classification_head, head.regression_head
    num_classes = classification.num_classes
    # Logits of std 1 around -3 (sigmoid scores from ~0.001 to ~0.9, no two tied), with a prior per
    # class (std `prior_std`), as training leaves, so that the best detections are of several classes.
    logits = torch.cat([classification.cls_logits(classification.conv(f)).flatten() for f in features])
    classification.cls_logits.weight /= logits.std()
    priors = torch.randn(num_classes, generator=torch.Generator().manual_seed(seed)) * prior_std - 3.0
    classification.cls_logits.bias.copy_(priors.repeat(classification.num_anchors))
    # torchvision's column 0 (background) is never a positive in training: it stays silent.
    classification.cls_logits.bias.view(-1, num_classes)[:, 0] = -30.0
    boxes = torch.cat([regression.bbox_reg(regression.conv(f)).flatten() for f in features])
    regression.bbox_reg.weight *= box_scale / boxes.std()
    regression.bbox_reg.bias.fill_(box_bias)
    if hasattr(regression, "bbox_ctrness"):
        centerness = torch.cat([regression.bbox_ctrness(regression.conv(f)).flatten() for f in features])
        regression.bbox_ctrness.weight /= centerness.std()
        regression.bbox_ctrness.bias.fill_(1.0)


def converted(reference: nn.Module, tmp_path, overrides: list[str]) -> nn.Module:
    torch.save(reference.state_dict(), tmp_path / "torchvision.pth")
    convert_weights("torchvision", tmp_path / "torchvision.pth", tmp_path / "converted.pth")
    return load_model(tmp_path / "converted.pth", overrides=[*EXACT, *overrides])


def match_within(want: dict, got: dict, count: int, box_tol: float, score_tol: float) -> dict[int, int]:
    """Each of want's first `count` detections -> an unused detection of `got` with the same label,
    every box coordinate within box_tol px and the score within score_tol (the nearest box first).
    Tolerances rather than IoU, so that boxes clipped to zero width at the image border match too."""
    taken, pairs = set(), {}
    for j in range(min(count, len(want["boxes"]))):
        box_diff = (got["boxes"] - want["boxes"][j]).abs().max(dim=1).values
        ok = (got["labels"] == want["labels"][j]) & (box_diff <= box_tol) & \
            ((got["scores"] - want["scores"][j]).abs() <= score_tol)
        for i in torch.nonzero(ok, as_tuple=True)[0][torch.argsort(box_diff[ok])].tolist():
            if i not in taken:
                taken.add(i)
                pairs[j] = i
                break
    return pairs


def assert_top_detections_match(reference: nn.Module, ours: nn.Module, images: list[torch.Tensor]) -> list[str]:
    """Every one of torchvision's best TOP detections has its match (match_within: same label, box
    within 1e-2 px, score within 1e-4); returns the figures, one line per image."""
    with torch.no_grad():
        # The pyramid first (P3..P7 on the same normalized batch): a level the detections barely
        # draw from (P7) must agree too.
        batch = reference.transform(images)[0].tensors
        for level, (want, got) in enumerate(zip(reference.backbone(batch).values(), ours.backbone(batch).values())):
            assert want.shape == got.shape
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()), msg=f"P{level + 3}")
        expected, actual = reference(images), ours(images)
    lines = []
    for want, got in zip(expected, actual):
        assert len(want["boxes"]) >= TOP, f"torchvision gave only {len(want['boxes'])} detections"
        assert int(want["labels"].min()) >= 1
        pairs = match_within(want, got, TOP, box_tol=1e-2, score_tol=1e-4)
        missing = [j for j in range(TOP) if j not in pairs]
        assert not missing, (f"torchvision's detections {missing[:10]} have no match here (same label, box within "
                             f"1e-2 px, score within 1e-4): e.g. {want['boxes'][missing[0]].tolist()} "
                             f"label {int(want['labels'][missing[0]])} score {float(want['scores'][missing[0]]):.5f}")
        mine = torch.tensor([pairs[j] for j in range(TOP)])
        box_diff = (got["boxes"][mine] - want["boxes"][:TOP]).abs().max().item()
        score_diff = (got["scores"][mine] - want["scores"][:TOP]).abs().max().item()
        distinct = len({int(label) for label in want["labels"][:TOP]})
        lines.append(f"{len(got['boxes'])} detections (torchvision {len(want['boxes'])}), top {TOP}: max box diff "
                     f"{box_diff:.3g} px, max score diff {score_diff:.3g}, scores {want['scores'][0]:.3f}.."
                     f"{want['scores'][TOP - 1]:.3f}, {distinct} labels, same order "
                     f"{torch.equal(mine, torch.arange(TOP))}")
    return lines


def test_retinanet_resnet50_fpn(coco128, tmp_path):
    images = photos(coco128, 2)
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=384)
    behave_trained_(reference, images, seed=0)
    # Built without pretrained weights, torchvision's ResNet has BatchNorm2d (its published
    # weights: FrozenBatchNorm2d, the converted default): compare like with like.
    ours = converted(reference, tmp_path, ["model.input.min_size_test=384", "backbone.norm=bn"])
    assert ours.config.model.name == "retinanet_fpn" and ours.num_classes == 90
    assert ours.config.model.fpn.p6_source == "p5" and ours.head.cls_logits.out_channels == 9 * 90
    for line in assert_top_detections_match(reference, ours, images):
        print("retinanet_resnet50_fpn parity:", line)


def test_retinanet_resnet50_fpn_v2(coco128, tmp_path):
    images = photos(coco128, 2)
    reference = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, min_size=384)
    # GroupNorm towers give every class a similar logit map: wider priors so that the best 90
    # detections hold several classes (4 with std 1; 1 with 0.5).
    behave_trained_(reference, images, seed=1, prior_std=1.0)
    ours = converted(reference, tmp_path, ["model.input.min_size_test=384"])
    assert ours.config.model.name == "retinanet_fpn_v2" and ours.config.backbone.norm == "bn"
    assert ours.config.model.fpn.p6_source == "c5" and ours.config.model.head_loss.box_loss == "giou"
    assert isinstance(ours.head.cls_convs[0][1], nn.GroupNorm) and ours.head.cls_convs[0][0].bias is None
    for line in assert_top_detections_match(reference, ours, images):
        print("retinanet_resnet50_fpn_v2 parity:", line)
