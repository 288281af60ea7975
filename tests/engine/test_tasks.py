"""The engine takes any Task object: it never imports one, a toy task defined here trains,
checkpoints, resumes and evaluates through it, and the detection task resolves its classes
once, in one place."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from detector.config import load_config
from detector.engine.run import train
from detector.engine.task import Task
from detector.engine.trainer import HookBase

ENGINE = Path(__file__).resolve().parents[2] / "detector" / "engine"


def test_the_engine_never_imports_a_task():
    imported = []
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                # Relative imports made absolute: "from ..tasks import x" in detector/engine/ is detector.tasks.
                base = ["detector", "engine"][:3 - node.level] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                imported += [(path.name, module)] + [(path.name, f"{module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                imported += [(path.name, alias.name) for alias in node.names]
    assert imported and not [(f, m) for f, m in imported if m == "detector.tasks" or m.startswith("detector.tasks.")]


class Crash(RuntimeError):
    """What the toy task raises to stop a run the way a kill would."""


class CrashBefore(HookBase):
    """Raise before training iteration `iteration + 1`, once everything of `iteration` (its
    checkpoint included) is written."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def before_step(self):
        if self.trainer.iter == self.iteration:
            raise Crash(f"killed after iteration {self.iteration}")


def line_mse(model: nn.Module) -> float:
    """The evaluation: the squared error against y = 3x - 1 on five fixed points."""
    with torch.no_grad():
        x = torch.linspace(-1, 1, 5).unsqueeze(1)
        return float(nn.functional.mse_loss(model(x), 3 * x - 1))


class Line(Task):
    """Fit y = 3x - 1 with one linear layer: data, step and evaluation the engine knows nothing about.

    Batch `step` is the loader's own count from the start iteration the engine gives it; the
    step function records the steps it trains on (`trained`), and `crash_after` makes the run
    die after that iteration. `drift` moves the training targets away from the evaluated line
    by that much per step, so the evaluation first improves, then worsens."""

    name = "line"

    def __init__(self, crash_after: int | None = None, drift: float = 0.0):
        self.crash_after = crash_after
        self.drift = drift
        self.trained: list[int] = []

    def resolve_classes(self, cfg, ctx=None):
        return []

    def build_model(self, cfg, ctx):
        return nn.Linear(1, 1)

    def build_train_loader(self, cfg, ctx, start_iter):
        def batches():
            step = start_iter
            while True:
                x = torch.linspace(-1, 1, 8).unsqueeze(1) + 0.01 * step
                yield {"x": x, "y": 3 * x - 1 + self.drift * step, "step": step}
                step += 1
        return batches()

    def build_step(self, cfg, ctx):
        def step(model, batch):
            self.trained.append(batch["step"])
            return {"loss_mse": nn.functional.mse_loss(model(batch["x"]), batch["y"])}
        return step

    def build_evaluator(self, cfg, model_for_eval, ctx, precision):
        class Evaluator:
            metrics = None

            def __call__(self, iteration):
                error = line_mse(model_for_eval())
                self.metrics = {"iteration": iteration, "mse": error}
                return {"line/mse": error}, []
        return Evaluator()

    def extra_hooks(self, cfg, ctx, run):
        return [] if self.crash_after is None else [CrashBefore(self.crash_after)]


class NotedLine(Line):
    """A Line that keeps a note of its own in every checkpoint, and takes it back on resume."""

    def __init__(self, note: str, crash_after: int | None = None):
        super().__init__(crash_after)
        self.note = note
        self.restored: list = []

    def checkpoint_extras(self, cfg, ctx):
        return {"line_note": {"text": self.note, "data_points": 8}}

    def restore_checkpoint_extras(self, cfg, ctx, checkpoint):
        self.restored.append(checkpoint["line_note"])


def line_config(out: Path, *extra: str):
    cfg = load_config([f"output_dir={out}", "data.root=/unused", "train.max_iter=40", "train.eval_period=20",
                       "train.checkpoint_period=20", "train.log_period=10", "train.best_metric=line/mse",
                       "train.best_mode=min", "solver.optimizer=sgd", "solver.base_lr=0.1", "solver.warmup_iters=0",
                       "solver.lr_scheduler=multistep", "dataloader.batch_size=64", "train.device=cpu", *extra],
                      config_name="cls")
    return cfg


def logged_iterations(log: str) -> list[int]:
    """The iterations of the training lines of log.txt ("iter: 30/40  loss_mse: ..."), in order."""
    return [int(n) for n in re.findall(r"iter: (\d+)/\d+ ", log)]


def test_a_task_of_ones_own_trains_evaluates_and_resumes_in_the_engine(tmp_path):
    straight = Line()
    metrics = train(line_config(tmp_path / "straight"), straight)
    assert metrics["iteration"] == 40 and metrics["mse"] < 0.05
    assert straight.trained == list(range(40))
    out = tmp_path / "straight"
    assert {"last.pth", "model_final.pth", "model_best.pth"} <= {p.name for p in (out / "checkpoints").iterdir()}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["type"] == "eval"] == [20, 40]
    assert (out / "summary.md").is_file()

    # A run killed after iteration 20 (its checkpoint written) and resumed: the second run trains
    # iterations 21..40 only, on the data from step 20 on, and ends where the straight run ended.
    out = tmp_path / "killed"
    first = Line(crash_after=20)
    with pytest.raises(Crash):
        train(line_config(out), first)
    assert first.trained == list(range(20))
    assert torch.load(out / "checkpoints" / "last.pth", weights_only=True)["iteration"] == 20
    resumed = Line()
    again = train(line_config(out, "train.resume=true"), resumed)
    log = (out / "log.txt").read_text()   # both runs, one after the other
    assert logged_iterations(log) == [10, 20, 30, 40]   # no iteration trained (and logged) twice
    assert f"Resumed from {out / 'checkpoints' / 'last.pth'} at iteration 20." in log
    assert "Training from iteration 20 to 40." in log
    assert resumed.trained == list(range(20, 40))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["type"]) for r in records] == [(10, "train"), (20, "train"), (20, "eval"),
                                                               (30, "train"), (40, "train"), (40, "eval")]
    final = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)["model"]
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert again["mse"] == metrics["mse"]

    # Resuming the finished run trains nothing more and evaluates the same weights again.
    done = Line()
    assert train(line_config(out, "train.resume=true"), done)["mse"] == metrics["mse"]
    assert done.trained == [] and logged_iterations((out / "log.txt").read_text()) == [10, 20, 30, 40]


def test_the_engine_asks_the_task_for_its_checkpoint_entries_and_gives_them_back_on_resume(tmp_path):
    out = tmp_path / "noted"
    with pytest.raises(Crash):
        train(line_config(out), NotedLine("first run", crash_after=20))
    for name in ("last.pth", "model_best.pth"):
        assert torch.load(out / "checkpoints" / name, weights_only=True)["line_note"] == {"text": "first run",
                                                                                         "data_points": 8}
    resumed = NotedLine("second run")
    train(line_config(out, "train.resume=true"), resumed)
    assert resumed.restored == [{"text": "first run", "data_points": 8}]   # what iteration 20's checkpoint held
    for name in ("last.pth", "model_final.pth", "model_best.pth"):
        assert torch.load(out / "checkpoints" / name, weights_only=True)["line_note"]["text"] == "second run", name
    fresh = NotedLine("fresh")
    train(line_config(tmp_path / "fresh"), fresh)
    assert fresh.restored == []   # nothing to give back without a resume


def test_the_best_checkpoint_is_the_evaluation_with_the_best_metric(tmp_path):
    """Targets drifting away from the evaluated line: the error falls, then rises, so the best
    evaluation is neither the first nor the last, and model_best.pth must hold that one."""
    out = tmp_path / "drift"
    train(line_config(out, "train.eval_period=10", "train.checkpoint_period=40"), Line(drift=0.02))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = {r["iteration"]: r["line"]["mse"] for r in records if r["type"] == "eval"}
    assert list(evaluations) == [10, 20, 30, 40]
    best_iteration = min(evaluations, key=evaluations.get)
    assert 10 < best_iteration < 40, evaluations   # the case is not trivially the first or the last
    best = torch.load(out / "checkpoints" / "model_best.pth", weights_only=True)
    assert best["iteration"] == best_iteration
    assert best["best"]["best_value"] == evaluations[best_iteration]
    # The weights are that iteration's: evaluated again, they give the error recorded then.
    model = nn.Linear(1, 1)
    model.load_state_dict(best["model"])
    assert line_mse(model) == pytest.approx(evaluations[best_iteration], rel=1e-6)
    final = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)
    assert final["best"]["best_iteration"] == best_iteration
    assert f"New best line/mse = {evaluations[best_iteration]:.4f} at iteration {best_iteration}" in \
        (out / "log.txt").read_text()


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
