"""The engine takes any Task object: it never imports one, a toy task defined here trains,
checkpoints, resumes and evaluates through it, and the detection task resolves its classes
once, in one place."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from detector.config import load_config
from detector.engine.run import train
from detector.engine.task import Task

ENGINE = Path(__file__).resolve().parents[2] / "detector" / "engine"


def test_the_engine_never_imports_a_task():
    imported = []
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.append((path.name, node.module))
            elif isinstance(node, ast.Import):
                imported += [(path.name, alias.name) for alias in node.names]
    assert imported and not [(f, m) for f, m in imported if m.startswith("detector.tasks")]


class Line(Task):
    """Fit y = 3x - 1 with one linear layer: data, step and evaluation the engine knows nothing about."""

    name = "line"

    def resolve_classes(self, cfg):
        return []

    def build_model(self, cfg, logger):
        return nn.Linear(1, 1)

    def build_train_loader(self, cfg, ctx, start_iter):
        def batches():
            step = start_iter
            while True:
                x = torch.linspace(-1, 1, 8).unsqueeze(1) + 0.01 * step
                yield {"x": x, "y": 3 * x - 1}
                step += 1
        return batches()

    def build_step(self, cfg, ctx):
        return lambda model, batch: {"loss_mse": nn.functional.mse_loss(model(batch["x"]), batch["y"])}

    def build_evaluator(self, cfg, model_for_eval, ctx, precision):
        class Evaluator:
            metrics = None

            def __call__(self, iteration):
                model = model_for_eval()
                with torch.no_grad():
                    x = torch.linspace(-1, 1, 5).unsqueeze(1)
                    error = float(nn.functional.mse_loss(model(x), 3 * x - 1))
                self.metrics = {"iteration": iteration, "mse": error}
                return {"line/mse": error}, []
        return Evaluator()


def line_config(out: Path, *extra: str):
    cfg = load_config([f"output_dir={out}", "data.root=/unused", "train.max_iter=40", "train.eval_period=20",
                       "train.checkpoint_period=20", "train.log_period=10", "train.best_metric=line/mse",
                       "train.best_mode=min", "solver.optimizer=sgd", "solver.base_lr=0.1", "solver.warmup_iters=0",
                       "solver.lr_scheduler=multistep", "dataloader.batch_size=64", "train.device=cpu", *extra],
                      config_name="cls")
    return cfg


def test_a_task_of_ones_own_trains_evaluates_and_resumes_in_the_engine(tmp_path):
    metrics = train(line_config(tmp_path / "straight"), Line())
    assert metrics["iteration"] == 40 and metrics["mse"] < 0.05
    out = tmp_path / "straight"
    assert {"last.pth", "model_final.pth", "model_best.pth"} <= {p.name for p in (out / "checkpoints").iterdir()}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["type"] == "eval"] == [20, 40]
    assert (out / "summary.md").is_file()
    # Resuming the finished run trains nothing more and evaluates the same weights again.
    again = train(line_config(out, "train.resume=true"), Line())
    assert again["mse"] == pytest.approx(metrics["mse"])


def test_detection_classes_are_resolved_once_from_the_dataset(tmp_path):
    from detector.tasks.detection import DetectionTask

    small = [f"dataset.root={tmp_path}", "dataset.num_train=4", "dataset.num_test=2", "dataset.image_size=64"]
    cfg = load_config(small)
    assert OmegaConf.is_interpolation(cfg.model, "num_classes")   # ${dataset_num_classes:}
    names = DetectionTask().resolve_classes(cfg)
    assert names == ["circle", "rectangle", "triangle", "cross", "star"] == list(cfg.model.class_names)
    assert cfg.model.num_classes == 5 and not OmegaConf.is_interpolation(cfg.model, "num_classes")  # kept as a number

    wrong = load_config([*small, "model.num_classes=3"])
    with pytest.raises(ValueError, match=r"model.num_classes=3 but the dataset has 5 classes"):
        DetectionTask().resolve_classes(wrong)
