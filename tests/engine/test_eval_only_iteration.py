"""eval_only on a .safetensors checkpoint (tools/convert_weights.py --output X.safetensors)
writes the iteration it was written at into metrics.json, as it does for a .pth (which
tests/tools/test_train_net.py's eval_only run checks); run in process on a tiny untrained
detector and two generated images."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from detector.config import load_config
from detector.engine.run import evaluate_checkpoint
from detector.modeling.build import build_model
from detector.tasks.detection import DetectionTask
from detector.weights.formats.safetensors_file import export_safetensors

ITERATION = 37


def tiny(root: Path, output_dir: Path, *extra: str) -> list[str]:
    """Two 64 px test images and a narrow ResNet-18 FPN detector: about a second to evaluate."""
    return [f"output_dir={output_dir}", f"dataset.root={root}", "dataset.num_train=2", "dataset.num_test=2",
            "dataset.image_size=64", "dataset.object_size=[12,40]", "model.input.min_size_test=64",
            "model.input.max_size_test=64", "model.rpn.pre_nms_topk_test=50", "model.rpn.post_nms_topk_test=20",
            "model.roi_heads.fc_dim=32", "model.fpn.out_channels=32", "train.device=cpu", "train.amp=none",
            "train.vis_period_images=0", "test.analysis=off",
            *extra]


def test_eval_only_on_a_safetensors_checkpoint_writes_its_iteration(tmp_path):
    # A tiny detector with its config and iteration, as tools/convert_weights.py exports a run's checkpoint.
    root = tmp_path / "shapes"
    cfg = load_config(tiny(root, tmp_path / "unused"))
    DetectionTask().resolve_classes(cfg)   # generates the images; fills model.num_classes
    weights = export_safetensors({"model": build_model(cfg).state_dict(), "iteration": ITERATION,
                                  "config": OmegaConf.to_container(cfg, resolve=True)}, tmp_path / "model.safetensors")
    out = tmp_path / "eval"
    cfg = load_config(tiny(root, out, "eval_only=true", f"model.weights={weights}"))
    evaluate_checkpoint(cfg, DetectionTask())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iteration"] == ITERATION
    assert 0.0 <= metrics["bbox"]["AP"] <= 1.0
