"""The meta-architecture: calling convention, input validation, training, coordinates."""
import pytest
import torch

from detector.modeling.build import build_model
from detector.modeling.preprocessing import ImagePreprocessor


def two_images():
    """Two small images, each with a bright red and a bright blue rectangle."""
    images, targets = [], []
    for seed in (0, 1):
        generator = torch.Generator().manual_seed(seed)
        image = torch.rand(3, 64, 96, generator=generator) * 0.2
        image[0, 12:48, 8:38] = 0.9
        image[2, 6:32, 48:90] = 0.9
        images.append(image)
        targets.append({"boxes": torch.tensor([[8.0, 12, 38, 48], [48, 6, 90, 32]]),
                        "labels": torch.tensor([1, 2])})
    return images, targets


def small_model(make_small_config, *overrides):
    torch.manual_seed(0)
    return build_model(make_small_config(*overrides))


def test_training_overfits_two_images(make_small_config):
    model = small_model(make_small_config, "backbone.norm=bn")
    model.train()
    images, targets = two_images()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    history = []
    for _ in range(30):
        losses = model(images, targets)
        assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    start, end = history[0], sum(history[-5:]) / 5
    assert end < 0.5 * start, history


def test_eval_returns_boxes_in_input_pixels(make_small_config):
    model = small_model(make_small_config, "model.input.min_size_test=64", "model.input.max_size_test=100",
                        "model.roi_heads.score_thresh=0.0")
    model.eval()
    images = [torch.rand(3, 90, 150), torch.rand(3, 200, 60)]
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for output, image in zip(outputs, images):
        assert set(output) == {"boxes", "scores", "labels"}
        assert output["labels"].dtype == torch.int64 and len(output["boxes"]) > 0
        assert ((output["labels"] >= 1) & (output["labels"] <= 2)).all()
        height, width = image.shape[-2:]
        boxes = output["boxes"]
        assert boxes[:, 0].min() >= 0 and boxes[:, 2].max() <= width + 1e-3
        assert boxes[:, 1].min() >= 0 and boxes[:, 3].max() <= height + 1e-3
        # Boxes can reach the far edges: they were scaled back, not left at the resized size.
        assert boxes[:, 2].max() > 0.7 * width or boxes[:, 3].max() > 0.7 * height


def test_preprocessor_resizes_like_torchvision_and_pads():
    preprocessor = ImagePreprocessor([0.0] * 3, [1.0] * 3, min_size_test=100, max_size_test=120, size_divisibility=32).eval()
    batch = preprocessor([torch.rand(3, 50, 80), torch.rand(3, 40, 40)])
    # 50x80: short side -> 100 would make the long side 160 > 120, so the long side wins.
    assert batch.image_sizes == [(75, 120), (100, 100)]
    assert batch.tensor.shape == (2, 3, 128, 128)
    assert batch.tensor[0, :, 75:, :].eq(0).all()
    preprocessor.train()
    assert preprocessor([torch.rand(3, 50, 80)]).image_sizes == [(50, 80)]


@pytest.mark.parametrize("images, message", [
    ([], "empty list"),
    (torch.rand(3, 32, 32), "list of"),
    ([torch.rand(32, 32)], r"shape \(32, 32\)"),
    ([torch.rand(1, 32, 32)], r"expected \[3, H, W\]"),
    ([torch.zeros(3, 32, 32, dtype=torch.uint8)], "float"),
    (["image.jpg"], "str"),
])
def test_bad_images_raise_value_error(make_small_config, images, message):
    model = small_model(make_small_config).eval()
    with pytest.raises(ValueError, match=message):
        model(images)


@pytest.mark.parametrize("target, message", [
    ({"boxes": torch.tensor([[50.0, 10, 20, 40]]), "labels": torch.tensor([1])}, "x2 <= x1"),
    ({"boxes": torch.tensor([[10.0, 40, 20, 10]]), "labels": torch.tensor([1])}, "y2 <= y1"),
    ({"boxes": torch.tensor([10.0, 10, 20, 20]), "labels": torch.tensor([1])}, r"\[M, 4\]"),
    ({"boxes": torch.tensor([[10.0, 10, 20, 20]]), "labels": torch.tensor([3])}, "expected 1..2"),
    ({"boxes": torch.tensor([[10.0, 10, 20, 20]])}, "'labels'"),
])
def test_bad_targets_raise_value_error(make_small_config, target, message):
    model = small_model(make_small_config).train()
    with pytest.raises(ValueError, match=message):
        model([torch.rand(3, 64, 64)], [target])
    with pytest.raises(ValueError, match="targets are required"):
        model([torch.rand(3, 64, 64)])


def test_images_without_boxes_train(make_small_config):
    model = small_model(make_small_config).train()
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
    losses = model([torch.rand(3, 64, 64)], [empty])
    sum(losses.values()).backward()
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_rpn_box_reg"].item() == 0.0


def test_anchor_sizes_must_match_pyramid_levels(make_small_config):
    with pytest.raises(ValueError, match="one size per FPN level"):
        build_model(make_small_config("model.anchor_generator.sizes=[32,64,128]"))
    model = small_model(make_small_config, "backbone.out_features=[res3,res4,res5]",
                        "model.anchor_generator.sizes=[32,64,128,256]").eval()
    assert model.pooled_levels == ["p3", "p4", "p5"]
    with torch.no_grad():
        assert set(model([torch.rand(3, 64, 64)])[0]) == {"boxes", "scores", "labels"}
