"""detector-export --format openvino --int8: a checkpoint to an int8 OpenVINO IR, calibrated on
training images, and, where the dataset has a test split, the AP it keeps.

    from detector.deploy.int8_evaluation import evaluate_int8
    from detector.export.int8_export import export_int8
    report = export_int8("model_final.pth", "model_int8.xml", calibration=["dataset=bccd"], evaluate=evaluate_int8)
    report.ap["int8"], report.ap["fp32"]

The steps: the float32 OpenVINO model of the checkpoint (openvino_export.openvino_model), NNCF's
post-training quantization on `calibration_images` training images (detector.export.int8), the
file written with the same metadata as a float export plus precision=int8 and what it was
calibrated on (rt_info `calibration`, `quantization`). Then `evaluate` (detector-export passes
detector.deploy.int8_evaluation.evaluate_int8, which runs the written file, so it lives in the
layer that runs files, above this one) fills in the AP of the file and of the PyTorch fp32 model
on the test split, and both figures are written into the file (rt_info `evaluation`), so the
file says what it scored when it was made.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from omegaconf import DictConfig

from detector.export.calibration import DEFAULT_IMAGES, Calibration, calibration_config, calibration_images
from detector.export.int8 import DEFAULT_BIAS_CORRECTION, FLOAT_PATTERN, FLOAT_TYPES, import_nncf, quantize_openvino


@dataclass
class Int8Report:
    path: Path
    calibration: Calibration
    ap: dict[str, dict] = field(default_factory=dict)   # "int8" / "fp32" -> metrics (empty: no test split)
    test_images: int = 0
    not_evaluated: str = "not asked"                   # why the test split was not evaluated

    def evaluation_json(self, cfg) -> str:
        """The rt_info `evaluation` entry: the test split's box metrics of both models, exact."""
        keys = ("AP", "AP50", "AP75")
        return json.dumps({"dataset": str(cfg.dataset.name), "split": "test", "images": self.test_images,
                           **{name: {k: box_metrics(self.ap[name])[k] for k in keys} for name in ("int8", "fp32")}})

    def lines(self) -> list[str]:
        c = self.calibration
        lines = [f"int8: calibrated on {c.images} of the {c.available} training images of dataset={c.dataset} "
                 f"(seed {c.seed})"]
        if not self.ap:
            lines.append(f"int8: not evaluated: {self.not_evaluated}")
            return lines
        for name, label in (("fp32", "PyTorch fp32"), ("int8", f"OpenVINO int8 ({self.path.name})")):
            box = box_metrics(self.ap[name])
            lines.append(f"{label:34s} AP {box['AP']:.4f}  AP50 {box['AP50']:.4f}  AP75 {box['AP75']:.4f}")
        drop = box_metrics(self.ap["fp32"])["AP"] - box_metrics(self.ap["int8"])["AP"]
        lines.append(f"int8 AP drop against fp32: {drop:+.4f} (on {self.test_images} test images)")
        return lines


def box_metrics(metrics: dict) -> dict:
    """The box evaluation of evaluate_detector's metrics (a mask model's are keyed by IoU type)."""
    return metrics["bbox"] if "bbox" in metrics else metrics


# (report, the calibration dataset's config, the PyTorch model, log) -> None; fills report.ap or
# report.not_evaluated.
Evaluation = Callable[["Int8Report", DictConfig, torch.nn.Module, Callable[[str], None]], None]


def export_int8(weights: str | os.PathLike, output: str | os.PathLike, calibration: Sequence[str] = (),
                calibration_count: int = DEFAULT_IMAGES, overrides: Iterable[str] = (),
                evaluate: Evaluation | None = None, log: Callable[[str], None] = print,
                bias_correction: str = DEFAULT_BIAS_CORRECTION) -> Int8Report:
    """Write checkpoint `weights` as an int8 OpenVINO IR to `output` (NAME.xml + NAME.bin).
    calibration: dataset overrides (e.g. ["dataset=bccd"]; empty: the checkpoint's own dataset);
    calibration_count: training images to calibrate on; overrides: model settings baked in
    (as export_model's); evaluate: what fills report.ap, the file's and the PyTorch fp32 model's
    metrics on the test split (detector.deploy.int8_evaluation.evaluate_int8), None: not evaluated;
    bias_correction: "full" or "fast" (detector.export.int8.BIAS_CORRECTION)."""
    from detector.export import ExportableDetector, example_image, exported_metadata
    from detector.export.openvino_export import checked_output, openvino_model, save_openvino
    from detector.weights.loading import model_from_checkpoint, read_model_checkpoint

    output = checked_output(output)   # before the minutes of quantization and evaluation
    checkpoint = read_model_checkpoint(weights)
    model = model_from_checkpoint(checkpoint, str(weights), overrides=list(overrides), device="cpu")
    cfg = calibration_config(model.config, calibration)   # read before any export work: a bad override fails fast
    images, record = calibration_images(cfg, calibration_count, calibration)
    wrapper = ExportableDetector(model)
    metadata = exported_metadata(model, wrapper, "openvino", str(weights), checkpoint.iteration,
                                 checkpoint.category_ids)
    del checkpoint
    metadata = dataclasses.replace(metadata, precision="int8", extra={
        "calibration": record.to_json(),
        "quantization": json.dumps({"tool": "nncf.quantize", "nncf": str(import_nncf().__version__),
                                    "preset": "performance", "bias_correction": bias_correction,
                                    "float_pattern": FLOAT_PATTERN, "float_types": list(FLOAT_TYPES)})})
    log(f"[int8] converting {weights} to OpenVINO ...")
    quantized = quantize_openvino(openvino_model(wrapper, example_image()), images, log, bias_correction)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_openvino(quantized, output, metadata.to_strings())
    report = Int8Report(path=output, calibration=record)
    if evaluate is not None:
        evaluate(report, cfg, model, log)
    if report.ap:   # the figures travel with the file: what it scored when it was made
        save_openvino(quantized, output, {**metadata.to_strings(), "evaluation": report.evaluation_json(cfg)})
    return report
