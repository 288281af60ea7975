"""The whole search, from the dataset overrides to the written results (detector-find-label-errors).

1. Every image of the dataset, train and test pooled, read through its own format
   (pooled_dataset.py) -> OUT/annotations.json.
2. K folds, seeded and stratified by class as the carved test split -> OUT/folds.json.
3. Honest predictions: K trainings, each predicting the fold it did not see (fold_training.py),
   or one given model (--weights) predicting everything.
4. Suspects: kinds from the error analysis' matching, scores from cleanlab (suspects.py).
5. OUT/label_errors.json, label_errors.csv, gallery/, summary.md (report.py, gallery.py).
--rescore repeats 4 and 5 from the predictions an earlier run left (new thresholds, no training).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from detector.label_errors.fold_training import (
    job_budget,
    predict_with_weights,
    train_folds,
)
from detector.label_errors.kinds import judged
from detector.label_errors.pooled_dataset import build_pooled, write_pooled
from detector.label_errors.suspects import THRESHOLD_KEYS, Findings, find_suspects

FOLDS_FILE = "folds.json"


@dataclass
class JobResult:
    findings: Findings
    gallery: list[str]
    wall_s: float


def draw_folds(pooled: dict, folds: int, seed: int) -> list[list[str]]:
    """The folds' image paths: stratified by the classes of each image's judged boxes."""
    from detector.data.split_carving import stratified_folds

    classes: dict[int, list[int]] = {int(i["id"]): [] for i in pooled["images"]}
    for ann in pooled["annotations"]:
        if judged(ann):
            classes[int(ann["image_id"])].append(int(ann["category_id"]))
    paths = {int(i["id"]): i["file_name"] for i in pooled["images"]}
    return stratified_folds([(paths[i], c) for i, c in classes.items()], folds, seed)


def device_type(cfg) -> str:
    import torch

    device = str(cfg.train.device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def run_job(training_overrides: Sequence[str], settings, out: Path, folds: int, top: int, weights: str | None,
            logger: logging.Logger) -> JobResult:
    from detector.config import load_config
    from detector.label_errors.scoring import require_cleanlab
    from detector.modeling.postprocess_keys import postprocess_key

    started = time.time()
    require_cleanlab()
    settings = settings.copy()
    settings.folds = folds   # --folds, as summary.md shows it
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(training_overrides)   # refuses a mistyped key before any work
    pooled = build_pooled(cfg)
    if len(pooled["images"]) < folds:
        raise ValueError(f"dataset={cfg.dataset.name} has {len(pooled['images'])} usable image(s): too few for "
                         f"--folds {folds}; give --folds {len(pooled['images'])} or fewer (at least 2), or more images")
    pooled_path = write_pooled(pooled, out)
    parts = draw_folds(pooled, folds, int(settings.fold_seed))
    folds_path = out / FOLDS_FILE
    folds_path.write_text(json.dumps({"seed": int(settings.fold_seed), "folds": parts}))
    logger.info("%s: %d images (train and test pooled), %d boxes, %d classes (%s) -> %s", cfg.dataset.name,
                len(pooled["images"]), len(pooled["annotations"]), len(pooled["categories"]),
                ", ".join(c["name"] for c in pooled["categories"]), pooled_path)
    score_key = postprocess_key(cfg.model, "score_thresh")
    notes = []
    if weights:
        logger.warning("--weights %s: one model predicts every image; the images it trained on are not honestly "
                       "predicted (it has learned their labels, mistakes included), so errors there are found less "
                       "often. Without --weights, %d models each predict the images they did not see.", weights, folds)
        results = predict_with_weights(training_overrides, weights, pooled_path, folds_path, out, score_key, settings,
                                       logger)
        notes.append(f"predictions: one given model, --weights {weights} (not honest on its own training images)")
    else:
        budget = job_budget(training_overrides, settings, device_type(cfg), logger)
        logger.info("%d folds of %s images; time: %s%s", folds, "/".join(str(len(p)) for p in parts), budget.source,
                    "" if budget.total_s is None else f" ({budget.total_s / 60:.1f} min for the whole job)")
        results = train_folds(training_overrides, pooled_path, folds_path, folds, out, score_key, settings, budget,
                              started, logger)
        notes.append(f"predictions: {folds} folds ({'/'.join(str(len(p)) for p in parts)} images), each predicted by "
                     f"the model trained on the other folds; time: {budget.source}")
    findings, gallery = score_and_write(pooled, results, settings, out, top, notes, started,
                                        int(cfg.dataset.max_image_pixels), logger)
    return JobResult(findings, gallery, time.time() - started)


def score_and_write(pooled: dict, results: list[dict], settings, out: Path, top: int, notes: list[str],
                    started: float, max_image_pixels: int, logger: logging.Logger) -> tuple[Findings, list[str]]:
    """Steps 4 and 5: the suspects of `results` against `pooled`, and every output file."""
    from detector.label_errors.gallery import write_gallery
    from detector.label_errors.report import write_csv, write_json, write_summary

    kept = [r for r in results if float(r["score"]) >= float(settings.min_score)]
    logger.info("scoring %d predictions (score >= %s) against %d boxes", len(kept), settings.min_score,
                len(pooled["annotations"]))
    findings = find_suspects(pooled, kept, {key: settings[key] for key in THRESHOLD_KEYS})
    write_json(findings, out)
    write_csv(findings, out)
    gallery = write_gallery(findings, pooled, out, top, max_image_pixels)
    wall = time.time() - started
    notes = [*notes, f"wall time of the whole job: {wall / 60:.1f} min"]
    shown = {key: settings[key] for key in ("folds", "fold_seed", "min_score", *THRESHOLD_KEYS)}
    shown["top"] = top
    write_summary(findings, pooled, shown, notes, gallery, out)
    counts = {kind: sum(1 for s in findings.suspects if s.kind == kind) for kind in
              ("missing", "wrong_class", "loose", "spurious")}
    logger.info("%d suspects (%s) in %.1f min; %s, %s, gallery/ (%d images), summary.md in %s",
                len(findings.suspects), ", ".join(f"{k} {v}" for k, v in counts.items()), wall / 60,
                "label_errors.json", "label_errors.csv", len(gallery), out)
    return findings, gallery


def rescore(settings, out: Path, top: int, logger: logging.Logger) -> JobResult:
    """--rescore: the suspects again from the predictions an earlier run left in `out` (its
    folds' or --weights' evaluation results), with the current settings; nothing is trained."""
    from detector.label_errors.fold_format import read_folds
    from detector.label_errors.fold_training import WEIGHTS_RUN, read_results
    from detector.label_errors.pooled_dataset import POOLED_FILE, read_pooled
    from detector.label_errors.scoring import require_cleanlab

    started = time.time()
    require_cleanlab()
    out = Path(out).resolve()
    if not (out / POOLED_FILE).is_file() or not (out / FOLDS_FILE).is_file():
        raise FileNotFoundError(f"--rescore: {out} holds no earlier run ({POOLED_FILE}, {FOLDS_FILE}); "
                                "run detector-find-label-errors with --output there first")
    pooled = read_pooled(out / POOLED_FILE)
    if (out / WEIGHTS_RUN).is_dir():
        run_dirs = [out / WEIGHTS_RUN]
        notes = ["predictions: those of the earlier --weights run (--rescore)"]
    else:
        count = len(read_folds(str(out / FOLDS_FILE)))
        settings = settings.copy()
        settings.folds = count
        run_dirs = [out / "folds" / str(k) for k in range(count)]
        notes = [f"predictions: those of the earlier run's {count} folds (--rescore)"]
    results = [r for run_dir in run_dirs for r in read_results(run_dir)]
    findings, gallery = score_and_write(pooled, results, settings, out, top, notes, started,
                                        recorded_max_image_pixels(run_dirs[0]), logger)
    return JobResult(findings, gallery, time.time() - started)


def recorded_max_image_pixels(run_dir: Path) -> int:
    """dataset.max_image_pixels of an earlier prediction run (its config.yaml): --rescore draws the
    gallery under the limit that run read the images with, not under a default of its own."""
    from omegaconf import OmegaConf

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--rescore: {path} is missing (every training run writes it); run "
                                "detector-find-label-errors again without --rescore")
    return int(OmegaConf.load(path).dataset.max_image_pixels)
