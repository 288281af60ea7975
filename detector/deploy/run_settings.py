"""eval_only on an exported file: the model is the file, the run's model/backbone config is the
one the file carries, and what cannot apply to a traced graph is refused before any work:
test-time augmentation (the graph takes one view), model.* overrides that would change a
setting baked into the graph (re-export instead), a device the runtime cannot use, a precision
other than fp32 outside OpenVINO. train.amp does not apply: the file's precision is
test.precision."""
from __future__ import annotations

import logging
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from detector.deploy.exported_model import ExportedDetector
from detector.deploy.file_kind import file_kind
from detector.deploy.loading import check_device, check_precision, load_exported
from detector.deploy.metadata_reader import read_metadata
from detector.export.metadata import ExportMetadata


def config_error(message: str) -> Exception:
    from detector.config import ConfigError

    return ConfigError(message)


def changed_settings(metadata: ExportMetadata, overrides: Sequence[str]) -> list[str]:
    """The `overrides` (model.* / backbone.* "key=value") that differ from the file's config."""
    stored = metadata.config()
    changed = []
    for item in overrides:
        key, _, value = str(item).partition("=")
        wanted = OmegaConf.from_dotlist([f"{key}={value}"])
        new, old = OmegaConf.select(wanted, key), OmegaConf.select(stored, key, default="<absent>")
        if OmegaConf.is_config(old):
            old = OmegaConf.to_container(old, resolve=True)
        if OmegaConf.is_config(new):
            new = OmegaConf.to_container(new, resolve=True)
        if new != old:
            changed.append(f"{key}={value} (the file has {old})")
    return changed


def refuse_run_settings(cfg: DictConfig, path: str) -> None:
    """ConfigError for a run setting that cannot apply to the exported file `path`: test-time
    augmentation, a device its runtime cannot use, a precision other than fp32 outside OpenVINO.
    Called by the detection task's config checks, before anything is created."""
    kind = file_kind(path)
    if bool(cfg.test.aug):
        raise config_error(f"test.aug=true (test-time augmentation) cannot apply to the exported file {path}: its "
                           "graph runs one view of each image. Evaluate the checkpoint with test.aug=true, or set "
                           "test.aug=false.")
    try:
        check_device(kind, str(cfg.train.device), path)
        check_precision(kind, str(cfg.test.precision), path)
    except ValueError as error:
        raise config_error(str(error)) from None


def refuse_inapplicable(cfg: DictConfig, overrides: Sequence[str], metadata: ExportMetadata, path: str) -> None:
    """refuse_run_settings, and ConfigError for model.* overrides that would change a setting
    baked into the file's graph (an override equal to the file's setting is accepted)."""
    refuse_run_settings(cfg, path)
    changed = changed_settings(metadata, overrides)
    if changed:
        raise config_error(f"{'; '.join(changed)}: the exported file {path} has its model settings baked into its "
                           "graph (thresholds, NMS, sizes). Drop the override, or export the checkpoint again with "
                           f"it: detector-export --weights {metadata.source or 'CKPT'} --format {file_kind(path)} "
                           f"--set {' '.join(str(o) for o in overrides)} --output FILE.")


def exported_run_model(cfg: DictConfig, overrides: Sequence[str], logger: logging.Logger) -> tuple[ExportedDetector, DictConfig, int | None]:
    """(the file as a model, the run's config describing it, the iteration it was exported at).
    Like a checkpoint's evaluation, the config's `model` and `backbone` are the file's (what
    config.yaml records), every other section the run's; model.weights keeps the path given."""
    path = str(cfg.model.weights)
    device = "cuda" if str(cfg.train.device) == "cuda" else "cpu"   # auto: the CPU, where every runtime runs
    metadata = read_metadata(path)
    refuse_inapplicable(cfg, overrides, metadata, path)
    if str(cfg.train.amp) != "none":
        logger.info("train.amp=%s does not apply to the exported file %s; it runs at test.precision=%s.",
                    cfg.train.amp, path, cfg.test.precision)
    model = load_exported(path, precision=str(cfg.test.precision), device=device, logger=logger, metadata=metadata)
    stored = metadata.config()
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = OmegaConf.create(OmegaConf.to_container(stored.model, resolve=True))
        cfg.backbone = OmegaConf.create(OmegaConf.to_container(stored.backbone, resolve=True))
        cfg.model.weights = path
        cfg.backbone.weights = None
    logger.info("Evaluating the exported %s (runtime: %s, precision %s, exported from %s).", path, model.kind,
                model.precision, metadata.source or "?")
    return model, cfg, metadata.iteration


def baked_score_threshold(metadata: ExportMetadata) -> float:
    """The detection score threshold in the file's graph (the RoI heads', or a one-stage head's;
    the RPN's proposal threshold is not a detection threshold)."""
    values = [float(v) for key, v in metadata.postprocess.items()
              if key.endswith(".score_thresh") and not key.startswith("model.rpn.")]
    return max(values, default=0.0)


def exported_for_prediction(weights: str, score_thresh: float, device: str, tta: bool,
                            precision: str = "fp32") -> ExportedDetector:
    """detector-predict on an exported file: the file as a model, after refusing what cannot
    apply. --score-thresh keeps the detections scoring at least that, which equals the model's
    own threshold when it is at or above the one baked into the graph (NMS only lets a higher
    score suppress a lower one); below it, the detections are not in the file."""
    path = str(weights)
    kind = file_kind(path)
    if tta:
        raise ValueError(f"--tta cannot apply to the exported file {path}: its graph runs one view of each image. "
                         "Predict with the checkpoint for test-time augmentation.")
    metadata = read_metadata(path)
    baked = baked_score_threshold(metadata)
    if score_thresh < baked:
        raise ValueError(f"--score-thresh {score_thresh} is below the score threshold baked into {path} ({baked}): "
                         f"the detections under it are not in the file. Use --score-thresh {baked} or more, or "
                         f"export again: detector-export --weights {metadata.source or 'CKPT'} --format {kind} "
                         f"--set model.roi_heads.score_thresh={score_thresh} --output FILE.")
    device = "cpu" if device == "auto" else device
    return load_exported(path, precision=precision, device=device, metadata=metadata)
