"""Honest predictions: K trainings through the normal training command, one per held-out fold.

Each fold runs `python -m detector.cli.train_net` (detector-train) in its own process, with every
override the user gave (dataset, model, schedule, train.*, ...) and the held-out fold swapped in
as the dataset (fold_format.py); its final evaluation predicts the fold, which its weights never
saw, down to `min_score`, and writes them to <fold>/inference/coco_instances_results.json. A
process per fold gives each training what a normal run has (its own log.txt, config.yaml and
checkpoints in OUT/folds/<k>/, and train.time_budget counted from its own start).

Time: an explicit train.max_iter sets every fold's length (the budget is then ignored, as for a
training run). Otherwise the job's budget -- train.time_budget when given, else the tool's default
for the device (conf/label_errors/default.yaml: budget.cpu / budget.gpu) -- is shared out before
each fold: what is left, less a reserve for the scoring, divided by the folds still to train, so
a fold that ends early leaves its time to the others.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from detector.label_errors.fold_format import ALL_IMAGES

FOLD_FORMAT = "detector.label_errors.fold_format.HeldOutFold"
RESULTS = Path("inference") / "coco_instances_results.json"
WEIGHTS_RUN = "weights_predictions"   # OUT/<this>: the --weights prediction run (--rescore looks for it)
MIN_FOLD_S = 60.0   # a fold's budget is never planned below this (the plan needs a few timed steps)


class FoldTrainingError(RuntimeError):
    """A fold's training failed; the message names its log."""


@dataclass
class Budget:
    total_s: float | None      # None: train.max_iter decides
    source: str                # what set it, for the log

    def fold_seconds(self, started: float, now: float, folds_left: int, reserve_s: float) -> float | None:
        if self.total_s is None:
            return None
        left = self.total_s - (now - started) - reserve_s
        return max(MIN_FOLD_S, left / max(1, folds_left))


def given_key(overrides: Sequence[str], key: str) -> str | None:
    """The value `overrides` give `key` (key=value, +key=, ++key=), else None; None too where
    they set it to null (key=null), as Hydra reads it."""
    for item in overrides:
        name, sep, value = str(item).lstrip("+").partition("=")
        if sep and name.strip() == key:
            return None if value in ("null", "None") else value
    return None


def job_budget(overrides: Sequence[str], settings, device_type: str, logger: logging.Logger) -> Budget:
    """The whole job's time (module docstring), logged."""
    from detector.utils.durations import parse_time_budget

    max_iter = given_key(overrides, "train.max_iter")
    budget = given_key(overrides, "train.time_budget")
    if max_iter is not None:
        if budget is not None:
            logger.warning("train.max_iter=%s and train.time_budget=%s are both given: train.max_iter wins, "
                           "each fold trains %s iterations.", max_iter, budget, max_iter)
        return Budget(None, f"train.max_iter={max_iter} per fold")
    default = settings.budget.gpu if device_type == "cuda" else settings.budget.cpu
    if budget in (None, "auto"):
        seconds = parse_time_budget(default)
        return Budget(seconds, f"the tool's default for a {'GPU' if device_type == 'cuda' else 'CPU'} "
                               f"(label_errors.budget.{'gpu' if device_type == 'cuda' else 'cpu'}={default}); "
                               "set train.time_budget for another")
    return Budget(parse_time_budget(budget), f"train.time_budget={budget} for the whole job")


def quoted(value: str) -> str:
    """A value Hydra's override parser reads back as this exact string."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def fold_overrides(user: Sequence[str], pooled: Path, folds_file: Path, fold: int, output_dir: Path,
                   score_key: str, min_score: float, fold_seconds: float | None) -> list[str]:
    """The overrides of one fold's training (or, fold=-1 with eval_only, of the --weights prediction)."""
    extra = [f"dataset._target_={FOLD_FORMAT}", f"++dataset.pooled={quoted(pooled)}",
             f"++dataset.folds_file={quoted(folds_file)}", f"++dataset.fold={fold}",
             f"output_dir={quoted(output_dir)}", f"{score_key}={min_score}", "test.max_images=null",
             "test.analysis=off"]
    if fold_seconds is not None:
        extra.append(f"train.time_budget={int(round(fold_seconds))}s")
    return [*user, *extra]


def run_training_command(overrides: Sequence[str], output_dir: Path, what: str) -> dict:
    """detector-train with `overrides` in a process of its own; its metrics.json. Its console
    output goes to output_dir/console.txt (the run's own log is output_dir/log.txt)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    console = output_dir / "console.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(console, "w") as handle:
        code = subprocess.call([sys.executable, "-m", "detector.cli.train_net", *overrides], stdout=handle,
                               stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = console.read_text(errors="replace").strip().splitlines()[-5:]
        raise FoldTrainingError(f"{what} failed (exit code {code}); see {console}:\n  " + "\n  ".join(tail))
    metrics = output_dir / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def read_results(output_dir: Path) -> list[dict]:
    path = output_dir / RESULTS
    if not path.is_file():
        raise FoldTrainingError(f"{path} is missing: the run's final evaluation wrote no predictions")
    return json.loads(path.read_text())


def train_folds(user: Sequence[str], pooled: Path, folds_file: Path, num_folds: int, out: Path, score_key: str,
                settings, budget: Budget, started: float, logger: logging.Logger,
                clock: Callable[[], float] = time.time) -> list[dict]:
    """Every fold trained and its held-out images predicted; the predictions of all folds."""
    results = []
    for fold in range(num_folds):
        seconds = budget.fold_seconds(started, clock(), num_folds - fold, float(settings.budget.reserve_s))
        fold_dir = out / "folds" / str(fold)
        logger.info("fold %d/%d: training on the other folds%s, then predicting its images (log: %s)", fold + 1,
                    num_folds, "" if seconds is None else f" for {seconds / 60:.1f} min", fold_dir / "log.txt")
        metrics = run_training_command(
            fold_overrides(user, pooled, folds_file, fold, fold_dir, score_key, settings.min_score, seconds),
            fold_dir, f"fold {fold}'s training")
        fold_results = read_results(fold_dir)
        ap = metrics.get("bbox", {}).get("AP") if isinstance(metrics.get("bbox"), dict) else None
        logger.info("fold %d/%d: %d predictions%s, %.1f min into the job", fold + 1, num_folds, len(fold_results),
                    "" if ap is None else f", AP {ap:.3f} on its held-out images", (clock() - started) / 60)
        results.extend(fold_results)
    return results


def predict_with_weights(user: Sequence[str], weights: str, pooled: Path, folds_file: Path, out: Path,
                         score_key: str, settings, logger: logging.Logger) -> list[dict]:
    """--weights: the given model predicts every image (an eval_only run on all of them)."""
    run_dir = out / WEIGHTS_RUN
    overrides = [*fold_overrides(user, pooled, folds_file, ALL_IMAGES, run_dir, score_key, settings.min_score, None),
                 "eval_only=true", f"model.weights={quoted(weights)}"]
    run_training_command(overrides, run_dir, f"the prediction with --weights {weights}")
    return read_results(run_dir)
