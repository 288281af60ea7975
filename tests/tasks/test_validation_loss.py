"""Validation loss: finite losses on held-out images, nothing about the model or the RNG
changed, logged to TensorBoard during training, training itself unaffected."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.tasks.validation_loss import build_validation_set, compute_validation_loss

from reliability_helpers import run_in_process
from test_train_net import final_weights, tiny

LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "total_loss"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from detector.config import load_config
    from detector.modeling.build import build_model

    root = tmp_path_factory.mktemp("shapes")
    cfg = load_config(tiny(root, root / "out", "dataset.num_test=5", "test.val_loss_max_images=2",
                           "backbone.norm=bn", "model.num_classes=5"))
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _state(model):
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_validation_loss_is_finite_and_changes_nothing(setup):
    cfg, model = setup
    dataset = build_validation_set(cfg)
    assert len(dataset) == 2  # test.val_loss_max_images
    image = dataset[(0, 0)]["image"]
    assert max(image.shape[-2:]) == cfg.model.input.max_size_test  # the test-size resize, no random scale
    model.train()
    model.backbone.body.layer1.eval()  # a mixed state, to be restored as it was
    before, rng = _state(model), torch.get_rng_state()
    first = compute_validation_loss(model, dataset, torch.device("cpu"), batch_size=2)
    assert set(first) == LOSSES
    assert all(torch.isfinite(torch.tensor(v)) and v >= 0 for v in first.values())
    assert first["total_loss"] == pytest.approx(sum(v for k, v in first.items() if k != "total_loss"))
    after = _state(model)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before), "validation changed weights or BatchNorm statistics"
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and not model.backbone.body.layer1.training and model.backbone.body.layer2.training
    # Same weights, same numbers: the samplers draw from a fixed seed.
    assert compute_validation_loss(model, dataset, torch.device("cpu"), batch_size=2) == first


def test_without_the_guard_batchnorm_statistics_would_move(setup):
    """What the guard prevents: a train-mode forward under no_grad updates running stats."""
    cfg, model = setup
    dataset = build_validation_set(cfg)
    sample = dataset[(0, 0)]
    model.train()
    before = _state(model)
    with torch.no_grad():
        model([sample["image"]], [sample["target"]])
    changed = [k for k in before if "running_mean" in k and not torch.equal(before[k], model.state_dict()[k])]
    assert changed
    model.load_state_dict(before)


def _scalars(event_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_training_logs_validation_loss_and_trains_the_same(tmp_path):
    root = tmp_path / "shapes"
    common = ("train.max_iter=4", "dataset.num_test=3", "dataloader.num_workers=0", "backbone.norm=bn")
    with_val, without = tmp_path / "val", tmp_path / "plain"
    # Both runs in this process (tools/train_net.py's run without two more starts of Python), each seeded by its config.
    run_in_process(tiny(root, with_val, *common, "train.val_loss_period=2"))
    run_in_process(tiny(root, without, *common))
    scalars = _scalars(with_val / "tb")
    for name in LOSSES:
        steps = scalars[f"val/{name}"]
        assert [step for step, _ in steps] == [2, 4]
        assert all(torch.isfinite(torch.tensor(value)) for _, value in steps)
    assert scalars["val/total_loss"][0][1] != scalars["val/total_loss"][1][1]  # the weights moved in between
    assert "Validation loss at iteration 4: " in (with_val / "log.txt").read_text()
    assert not any(tag.startswith("val/") for tag in _scalars(without / "tb"))
    # Validation draws no numbers from the training stream and leaves BatchNorm alone.
    a, b = final_weights(with_val), final_weights(without)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _context(tmp_path):
    import logging

    from detector.engine.context import RunContext

    return RunContext(torch.device("cpu"), 0, 1, tmp_path, logging.getLogger("detector"))


def test_the_engine_validates_with_the_detection_step_on_the_tasks_loader(setup, tmp_path):
    """The run's validation (engine/validation.py, on DetectionTask.build_validation_loader with
    DetectionTask.build_step) is the training step on the held-out batch, BatchNorm in eval mode,
    samplers seeded -- and the same numbers as compute_validation_loss on build_validation_set."""
    from detector.engine.validation import VALIDATION_SEED, validation_losses
    from detector.tasks.detection import DetectionTask

    cfg, model = setup
    task, ctx = DetectionTask(), _context(tmp_path)
    loader = task.build_validation_loader(cfg, ctx)
    batches = list(loader)
    assert [len(b["images"]) for b in batches] == [2]   # test.val_loss_max_images=2, dataloader.batch_size=2
    assert loader.num_workers == cfg.dataloader.num_workers   # the data package's loader, its settings
    step = task.build_step(cfg, ctx)
    losses = validation_losses(model, step, loader, ctx.device)

    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    torch.manual_seed(VALIDATION_SEED)
    with torch.no_grad():
        expected = {name: float(value) for name, value in step(model, batches[0]).items()}
    assert {k: v for k, v in losses.items() if k != "total_loss"} == pytest.approx(expected, rel=1e-6)
    assert compute_validation_loss(model, build_validation_set(cfg), ctx.device, batch_size=2) == losses


def test_max_images_evaluates_exactly_n_images_through_the_test_loader(setup, tmp_path):
    """test.max_images=3 of 5 test images: the evaluation sees the first 3, through the one test
    loader builder and its settings (workers, batch size), not a second loader."""
    from omegaconf import OmegaConf

    from detector.data.samplers import InferenceBatchSampler
    from detector.engine.precision import resolve_precision
    from detector.tasks.detection import DetectionTask

    cfg, model = setup
    cfg = OmegaConf.merge(cfg, {"test": {"max_images": 3, "analysis": "off"}, "train": {"vis_period_images": 0}})

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.seen = inner, []

        def forward(self, images):
            self.seen += [tuple(image.shape) for image in images]
            return self.inner(images)

    counting = Counting(model.eval())
    ctx = _context(tmp_path)
    evaluator = DetectionTask().build_evaluator(cfg, lambda: counting, ctx, resolve_precision("none", ctx.device))
    loader = evaluator.loader
    assert len(loader.dataset) == 5 and isinstance(loader.batch_sampler, InferenceBatchSampler)
    assert loader.num_workers == cfg.dataloader.num_workers and loader.persistent_workers
    evaluator(None)
    assert len(counting.seen) == 3
    results = (tmp_path / "inference" / "coco_instances_results.json")
    assert results.is_file() and evaluator.metrics is not None
