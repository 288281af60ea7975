"""eval_only writes the iteration the evaluated checkpoint was written at into metrics.json,
whether the checkpoint is a .pth or a .safetensors file (tools/convert_weights.py --output
X.safetensors), run in process on a tiny untrained detector and two generated images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from detector.config import load_config
from detector.engine.run import evaluate_checkpoint
from detector.modeling.build import build_model
from detector.tasks.detection import DetectionTask
from detector.weights.checkpoint_io import save_checkpoint
from detector.weights.safetensors_io import export_safetensors

ITERATION = 37


def tiny(root: Path, output_dir: Path, *extra: str) -> list[str]:
    """Two 64 px test images and a narrow ResNet-18 FPN detector: about a second to evaluate."""
    return [f"output_dir={output_dir}", f"dataset.root={root}", "dataset.num_train=2", "dataset.num_test=2",
            "dataset.image_size=64", "dataset.object_size=[12,40]", "model.input.min_size_test=64",
            "model.input.max_size_test=64", "model.rpn.pre_nms_topk_test=50", "model.rpn.post_nms_topk_test=20",
            "model.roi_heads.fc_dim=32", "model.fpn.out_channels=32", "train.device=cpu", "train.amp=none",
            "train.vis_period_images=0", "test.analysis=off",
            *extra]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """The same tiny detector saved at iteration ITERATION as a .pth and as a .safetensors file,
    each carrying its config, as a training run's checkpoint does."""
    folder = tmp_path_factory.mktemp("eval_only_iteration")
    cfg = load_config(tiny(folder / "shapes", folder / "unused"))
    DetectionTask().resolve_classes(cfg)   # generates the images; fills model.num_classes
    checkpoint = {"model": build_model(cfg).state_dict(), "iteration": ITERATION,
                  "config": OmegaConf.to_container(cfg, resolve=True)}
    return {"root": folder / "shapes", ".pth": save_checkpoint(checkpoint, folder / "model.pth"),
            ".safetensors": export_safetensors(checkpoint, folder / "model.safetensors")}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_eval_only_writes_the_checkpoints_iteration(written, tmp_path, suffix):
    out = tmp_path / "eval"
    cfg = load_config(tiny(written["root"], out, "eval_only=true", f"model.weights={written[suffix]}"))
    evaluate_checkpoint(cfg, DetectionTask())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iteration"] == ITERATION
    assert 0.0 <= metrics["bbox"]["AP"] <= 1.0
