"""Each weights file a run or a tool uses is read once: counted where files are deserialised
(torch.load and safetensors' safe_open, whatever calls them).

- A run starting from a published name (planted in a temporary TORCH_HOME) converts the
  publisher's file once and reads the conversion once, for the settings adoption, the settings
  check and the load together.
- Its resume reads neither: the planted files are deleted before it, so a fetch would fail.
- predict and eval_only read their checkpoint once (state, config, category ids, iteration).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from detector.config import load_config
from detector.modeling.build import build_model
from detector.weights import zoo
from detector.weights.checkpoint_io import save_checkpoint
from detector.weights.starting_weights import read_starting_weights, resumed_starting_weights
from detector.weights.weight_settings import adopt_weight_settings

BACKBONE = "torchvision://resnet18"
MSRA_LIKE = {"backbone.stride_in_1x1": True, "model.input.format": "BGR",
             "model.input.pixel_mean": [0.406, 0.456, 0.485], "model.input.pixel_std": [0.0039216] * 3}


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """Counts, per resolved path, every file torch.load or safetensors.safe_open opens."""
    import safetensors

    counts: Counter = Counter()
    real_load, real_open = torch.load, safetensors.safe_open

    def load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            counts[Path(f).resolve()] += 1
        return real_load(f, *args, **kwargs)

    def safe_open(f, *args, **kwargs):
        counts[Path(f).resolve()] += 1
        return real_open(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(safetensors, "safe_open", safe_open)
    return counts


@pytest.fixture
def planted_backbone(tmp_path, monkeypatch) -> Path:
    """A random ResNet-18 in torchvision's layout, planted as torchvision://resnet18's download in
    an empty TORCH_HOME, with the registry taking its hash (the downloader refuses: conftest)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), buffer)
    data = buffer.getvalue()
    path = zoo.cached_file(zoo.lookup(BACKBONE))
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    original = zoo.find_published

    def find_published(value):
        found = original(value)
        if found is None or found[1].name != original(BACKBONE)[1].name:
            return found
        source, entry = found
        return source, dataclasses.replace(entry, hash_prefix=hashlib.sha256(data).hexdigest()[: len(entry.hash_prefix)])

    monkeypatch.setattr(zoo, "find_published", find_published)
    return path


def run_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    """A ResNet-18 detector on four 96 px images: about a second per iteration on a CPU."""
    return [f"output_dir={out}", f"dataset.root={root}", "dataset.num_train=4", "dataset.num_test=2",
            "dataset.image_size=96", "dataset.object_size=[16,48]", "backbone=resnet18",
            "model.input.min_size_test=96", "model.input.max_size_test=96", "aug.min_size=[96]", "aug.max_size=96",
            "model.fpn.out_channels=32", "model.roi_heads.fc_dim=32", "model.rpn.pre_nms_topk_train=100",
            "model.rpn.post_nms_topk_train=50", "model.rpn.pre_nms_topk_test=50", "model.rpn.post_nms_topk_test=20",
            "model.roi_heads.batch_size_per_image=16", "dataloader.batch_size=2", "dataloader.num_workers=0",
            "solver.warmup_iters=1", "train.checkpoint_period=1", "train.eval_period=0", "train.log_period=1",
            "train.vis_period_images=0", "train.device=cpu", "train.amp=none", "test.analysis=off", *extra]


def test_a_run_converts_and_reads_a_published_name_once_and_its_resume_reads_none(planted_backbone, reads, tmp_path):
    from detector.engine.run import train
    from detector.tasks.detection import DetectionTask

    hub = planted_backbone.parent
    out = tmp_path / "run"
    train(load_config(run_overrides(tmp_path / "shapes", out, f"backbone.weights={BACKBONE}", "train.max_iter=1")),
          DetectionTask())
    converted = [p for p in hub.iterdir() if p != planted_backbone]
    assert len(converted) == 1, sorted(hub.iterdir())
    in_hub = {path.name: n for path, n in reads.items() if path.parent == hub.resolve()}
    # The publisher's file, read by its one conversion; the conversion, read once for the settings,
    # their check and the load.
    assert in_hub == {planted_backbone.name: 1, converted[0].name: 1}

    reads.clear()
    for path in hub.iterdir():   # a fetch or a conversion now fails: the downloader refuses
        path.unlink()
    log = out / "log.txt"
    train(load_config(run_overrides(tmp_path / "shapes", out, f"backbone.weights={BACKBONE}", "train.max_iter=2",
                                    "train.resume=true")), DetectionTask())
    assert "Resumed from" in log.read_text() and "at iteration 1." in log.read_text()
    assert not any(path.is_relative_to(hub.parent.parent.resolve()) for path in reads), reads
    assert reads[(out / "checkpoints" / "last.pth").resolve()] == 1   # the resume decision's read, used for all


def test_a_published_name_of_the_wrong_kind_is_refused_before_any_download(planted_backbone, monkeypatch, tmp_path):
    """A detector's model.weights must hold a whole detector: an ImageNet backbone's name is refused
    with the key to use, before anything is fetched; a classifier (conf/cls.yaml) starts from one."""
    downloads = []
    monkeypatch.setattr(zoo, "_download", lambda url, destination: downloads.append(url))
    detector = load_config(["backbone=resnet18", "model.num_classes=2", "model.weights=torchvision://resnet34"])
    with pytest.raises(zoo.PublishedWeightsError, match="pass it as backbone.weights=torchvision://resnet34"):
        read_starting_weights(detector)
    assert downloads == []
    classifier = load_config([f"data.root={tmp_path}", "backbone=resnet18", f"model.weights={BACKBONE}"],
                             config_name="cls")
    assert set(read_starting_weights(classifier).files) == {"model.weights"}


def save_msra_like_backbone(path: Path) -> Path:
    """A backbone file recording Detectron2's input settings (BGR, its statistics, stride in the 1x1)."""
    made_with = load_config(["backbone=resnet18", *(f"{k}={v}".replace(" ", "") for k, v in MSRA_LIKE.items())])
    from detector.modeling.backbone.resnet import ResNet

    torch.save({"model": ResNet(depth=18).state_dict(), "iteration": 0,
                "config": OmegaConf.to_container(made_with, resolve=True)}, path)
    return path


def test_a_resume_takes_the_settings_from_its_checkpoint_not_the_weights(tmp_path, reads):
    """The first run adopted the settings its weights record; a resume finds them in the config
    its checkpoint carries (the weights file may be gone) and adopts the same values."""
    weights = save_msra_like_backbone(tmp_path / "msra_like.pth")
    overrides = ["backbone=resnet18", "model.num_classes=2", f"backbone.weights={weights}"]
    first = load_config(overrides)
    assert set(adopt_weight_settings(first, weights=read_starting_weights(first))) == set(MSRA_LIKE)
    checkpoint = {"model": {}, "iteration": 4, "config": OmegaConf.to_container(first, resolve=True)}
    weights.unlink()
    reads.clear()

    resumed = load_config(overrides)
    start = resumed_starting_weights(resumed, checkpoint, tmp_path / "last.pth")
    assert start.files == {} and start.resumed_from == tmp_path / "last.pth"
    changed = adopt_weight_settings(resumed, weights=start)
    assert {key: new for key, (_, new) in changed.items()} == MSRA_LIKE
    assert OmegaConf.to_container(resumed, resolve=True) == OmegaConf.to_container(first, resolve=True)
    assert not reads


def tiny_detector(tmp_path: Path, suffix: str) -> tuple[Path, object]:
    cfg = load_config(["backbone=resnet18", "model.num_classes=2", "model.class_names=[circle,square]",
                       "model.fpn.out_channels=16", "model.roi_heads.fc_dim=16", "model.input.min_size_test=64",
                       "model.input.max_size_test=64"])
    torch.manual_seed(0)
    path = save_checkpoint({"model": build_model(cfg).state_dict(), "iteration": 7, "category_ids": [3, 5],
                            "config": OmegaConf.to_container(cfg, resolve=True)}, tmp_path / f"model{suffix}")
    return path, cfg


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_predict_reads_its_weights_once(suffix, tmp_path, reads):
    import cv2
    import numpy as np

    from detector.tasks.prediction import predict_images

    path, _ = tiny_detector(tmp_path, suffix)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    reads.clear()
    predict_images(path, [image], tmp_path / "out", score_thresh=0.0, device="cpu")
    assert reads == Counter({path.resolve(): 1})


def test_eval_only_reads_its_checkpoint_once(tmp_path, reads):
    """The model, its config and the iteration metrics.json records come from one read."""
    import json

    from detector.engine.run import evaluate_checkpoint
    from detector.tasks.detection import DetectionTask

    root = tmp_path / "shapes"
    cfg = load_config(run_overrides(root, tmp_path / "unused"))
    DetectionTask().resolve_classes(cfg)   # writes the images; fills model.num_classes
    path = save_checkpoint({"model": build_model(cfg).state_dict(), "iteration": 7,
                            "config": OmegaConf.to_container(cfg, resolve=True)}, tmp_path / "model.pth")
    reads.clear()
    out = tmp_path / "eval"
    evaluate_checkpoint(load_config(run_overrides(root, out, "eval_only=true", f"model.weights={path}")), DetectionTask())
    assert json.loads((out / "metrics.json").read_text())["iteration"] == 7
    assert reads == Counter({path.resolve(): 1})
