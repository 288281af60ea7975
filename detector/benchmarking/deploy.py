"""The deploy section (tools/benchmark.py --sections deploy [--trained CKPT ...]): each way of
running a detector on the CPU, side by side.

- On each trained checkpoint: ms per image (median, batch 1, at the checkpoint's own test size)
  on its first test images, and the AP on its whole test split through the evaluator that
  training uses (detector.evaluation.inference.evaluate_detector), for every runtime row.
- On R50-FPN at 800 px with random weights (speed only): ms per image on coco128 photos and the
  ratio to torchvision's fp32 model holding the same weights, timed as the inference section
  times them (interleaved rounds, per-round ratios).

A row is a runtime at a precision (RUNTIME_ROWS): PyTorch fp32 (the project's fast path), PyTorch
bf16 (autocast), ONNX Runtime fp32, OpenVINO f32 and bf16 (INFERENCE_PRECISION_HINT), and OpenVINO
int8 (NNCF post-training quantization, detector.export.int8; calibrated on the checkpoint's own
training images, or for R50-FPN on coco128 photos other than the timed ones). bf16 rows run only
where the CPU computes bf16 natively (AVX512-BF16 / AMX; elsewhere PyTorch emulates it at 5-17x
fp32's time and OpenVINO runs f32 whatever the hint). A new row is one more DeployRow and, for a
new kind of file, one more entry in EXPORTERS.
"""
from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from detector.benchmarking.timing import interleaved_times, ratio, summarize
from detector.export.int8 import DEFAULT_BIAS_CORRECTION
from detector.utils.hardware import cpu_has_native_bf16


@dataclass(frozen=True)
class DeployRow:
    name: str                # the row's label, e.g. "openvino f32"
    file: str                # "pytorch" (the model itself) or a key of EXPORTERS
    precision: str           # fp32 | bf16
    needs_native_bf16: bool = False


RUNTIME_ROWS: list[DeployRow] = [
    DeployRow("pytorch fp32", "pytorch", "fp32"),
    DeployRow("pytorch bf16", "pytorch", "bf16", needs_native_bf16=True),
    DeployRow("onnxruntime fp32", "onnx", "fp32"),
    DeployRow("openvino f32", "openvino", "fp32"),
    DeployRow("openvino bf16", "openvino", "bf16", needs_native_bf16=True),
    DeployRow("openvino int8", "openvino_int8", "fp32"),   # int8 layers, the float rest at f32
]
REFERENCE_ROW = "pytorch fp32"
R50_CALIBRATION_PHOTOS = 8   # coco128 photos after the timed ones: R50-FPN's int8 file is for speed only
NO_BF16_REASON = ("this CPU has no native bf16 (AVX512-BF16 / AMX): PyTorch would emulate it at 5-17x fp32's time "
                  "and OpenVINO runs f32 whatever the hint")


def export_onnx_file(model: nn.Module, folder: Path, calibration: list[torch.Tensor]) -> Path:
    from detector.export import ExportableDetector, example_image, export_onnx

    path = folder / "model.onnx"
    export_onnx(ExportableDetector(model), example_image(), path, metadata=file_metadata(model, "onnx"))
    return path


def export_openvino_file(model: nn.Module, folder: Path, calibration: list[torch.Tensor]) -> Path:
    from detector.export import ExportableDetector, example_image, export_openvino

    path = folder / "model.xml"
    export_openvino(ExportableDetector(model), example_image(), path, metadata=file_metadata(model, "openvino"))
    return path


def export_openvino_int8_file(model: nn.Module, folder: Path, calibration: list[torch.Tensor],
                              bias_correction: str = DEFAULT_BIAS_CORRECTION) -> Path:
    """The f32 OpenVINO file (written by the f32 row, or here) quantized on `calibration`."""
    from detector.export.int8 import quantize_openvino
    from detector.export.openvino_export import import_openvino, save_openvino

    source = folder / "model.xml"
    if not source.is_file():
        export_openvino_file(model, folder, calibration)
    quantized = quantize_openvino(import_openvino().Core().read_model(str(source)), calibration, log=lambda m: None,
                                  bias_correction=bias_correction)
    return save_openvino(quantized, folder / "model_int8.xml", file_metadata(model, "openvino", precision="int8"))


# file kind -> writer of that file from the eval-mode model and calibration images, into a folder.
EXPORTERS: dict[str, Callable[[nn.Module, Path, list[torch.Tensor]], Path]] = {
    "onnx": export_onnx_file, "openvino": export_openvino_file, "openvino_int8": export_openvino_int8_file}


def file_metadata(model: nn.Module, fmt: str, precision: str = "f32") -> dict[str, str]:
    from detector.export import ExportableDetector
    from detector.export.metadata import metadata_for

    return metadata_for(model.config, list(ExportableDetector(model).output_names), fmt, "benchmark",
                        precision=precision).to_strings()


def cpu_bf16(opts) -> bool:
    """Whether the CPU sections (deploy, profile) run bf16: suite.bf16_timed's rule on the CPU
    (--bf16 on / off as given; auto: where the CPU computes bf16 natively). Not imported from
    suite, which imports the sections."""
    return opts.bf16 == "on" if opts.bf16 in ("on", "off") else cpu_has_native_bf16()


def rows_to_run(bf16_native: bool, rows: list[DeployRow] = RUNTIME_ROWS) -> list[DeployRow]:
    return [row for row in rows if bf16_native or not row.needs_native_bf16]


def build_runners(model: nn.Module, rows: list[DeployRow], folder: Path, log: Callable[[str], None],
                  calibration: list[torch.Tensor] = (), int8_bias_correction: str = DEFAULT_BIAS_CORRECTION,
                  ) -> dict[str, Callable[[list[torch.Tensor]], list[dict]]]:
    """Row name -> a function running a list of images, batch 1 each; files exported once per kind
    (an int8 file calibrated on `calibration`, with detector-export's bias correction by default)."""
    from detector.deploy import load_exported

    threads = torch.get_num_threads()   # the same threads for every runtime
    files: dict[str, Path] = {}
    runners = {}
    for row in rows:
        if row.file == "pytorch":
            runners[row.name] = pytorch_runner(model, torch.bfloat16 if row.precision == "bf16" else None)
            continue
        if row.file not in files:
            log(f"[deploy] exporting {row.file} ...")
            exporter = EXPORTERS[row.file]
            if row.file == "openvino_int8":
                exporter = functools.partial(exporter, bias_correction=int8_bias_correction)
            files[row.file] = exporter(model, folder, list(calibration))
        exported = load_exported(files[row.file], precision=row.precision, threads=threads)
        runners[row.name] = exported_runner(exported)
    return runners


def pytorch_runner(model: nn.Module, dtype: torch.dtype | None):
    def run(images: list[torch.Tensor]) -> list[dict]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return model(images)
    run.model = model
    run.dtype = dtype
    return run


def exported_runner(exported: nn.Module):
    def run(images: list[torch.Tensor]) -> list[dict]:
        return exported(images)
    run.model = exported
    run.dtype = None
    return run


def time_runners(runners: dict, images: list[torch.Tensor], repeats: int, warmup: int,
                 reference: str | tuple[str, ...]) -> dict[str, dict]:
    """ms per image (median over rounds, each round every runner on the next image) and the
    median per-round time ratio to each `reference` row (ratio_to_<row>; below 1: faster)."""
    references = (reference,) if isinstance(reference, str) else tuple(reference)
    # Untimed: each runner sees every image twice first, as a deployment's steady state has (an
    # OpenVINO runner compiles a fixed-size graph on an image size's second image).
    for run in runners.values():
        for image in images + images:
            run([image])
    calls = {name: (lambda i, run=run: run([images[i % len(images)]])) for name, run in runners.items()}
    times = interleaved_times(calls, max(repeats, len(images)), warmup, torch.device("cpu"), desc="deploy timing")
    return {name: {"ms_median": 1000 * summarize(values)["median_s"],
                   **{f"ratio_to_{ref.replace(' ', '_')}": ratio(values, times[ref]) for ref in references}}
            for name, values in times.items()}


def test_set_ap(runner, loader, dataset) -> dict[str, float]:
    from detector.evaluation.inference import evaluate_detector

    metrics, _ = evaluate_detector(runner.model, loader, dataset.coco_gt, dataset.label_to_category_id,
                                   torch.device("cpu"), autocast_dtype=runner.dtype)
    return {"AP": metrics["AP"], "AP50": metrics["AP50"]}


def run_trained_checkpoint(path: str, opts, log) -> dict:
    from omegaconf import OmegaConf

    from detector.benchmarking.held_out_images import first_test_images, single_image_test_loader
    from detector.export.calibration import calibration_images
    from detector.weights.loading import load_model

    model = load_model(path, device="cpu")
    cfg = OmegaConf.create(OmegaConf.to_container(model.config, resolve=True))
    loader = single_image_test_loader(cfg)
    images = first_test_images(loader, opts.trained_images)
    rows = rows_to_run(cpu_bf16(opts))
    calibration = []
    if any(row.file == "openvino_int8" for row in rows):
        calibration, _ = calibration_images(cfg, opts.deploy_calibration_images)   # its training split, seeded
    with tempfile.TemporaryDirectory() as folder:
        runners = build_runners(model, rows, Path(folder), log, calibration,
                                int8_bias_correction=opts.deploy_bias_correction)
        timings = time_runners(runners, images, opts.repeats, opts.warmup, REFERENCE_ROW)
        accuracy = {}
        for name, runner in runners.items():
            log(f"[deploy] AP of {name} on the test split ...")
            accuracy[name] = test_set_ap(runner, loader, loader.dataset)
    size = [int(cfg.model.input.min_size_test), int(cfg.model.input.max_size_test)]
    return {"dataset": str(OmegaConf.select(cfg, "dataset.name")), "size": size,
            "timed_images": len(images), "test_images": len(loader.dataset),
            "rows": [{"name": name, **timings[name], **accuracy[name]} for name in runners]}


def run_r50_800(opts, log) -> dict:
    """R50-FPN at 800 / 1333, random weights: each row against torchvision fp32, same weights."""
    from detector.benchmarking import peers

    photos = peers.coco_photos(opts.datasets / "coco128", 3 + R50_CALIBRATION_PHOTOS)
    images = [image for image, _, _ in photos[:3]]
    calibration = [image for image, _, _ in photos[3:]]
    theirs = peers.torchvision_r50_fpn(*opts.test_size).eval()
    size = [f"model.input.min_size_test={opts.test_size[0]}", f"model.input.max_size_test={opts.test_size[1]}"]
    ours = peers.ours_with_same_weights(theirs, size).eval()
    rows = rows_to_run(cpu_bf16(opts))
    with tempfile.TemporaryDirectory() as folder:
        runners = {"torchvision fp32": pytorch_runner(theirs, None),
                   # speed only: the fast bias correction gives the same graph in a quarter of the time
                   **build_runners(ours, rows, Path(folder), log, calibration, int8_bias_correction="fast")}
        timings = time_runners(runners, images, opts.repeats, opts.warmup, ("torchvision fp32", REFERENCE_ROW))
    return {"size": list(opts.test_size), "images": [list(im.shape[-2:]) for im in images],
            "rows": [{"name": name, **timings[name]} for name in runners]}


def run_deploy(opts, device: torch.device) -> dict:
    """The section's report: {"trained": {CKPT: {...}}, "r50_800": {...}, "threads": N}. CPU only."""
    if device.type != "cpu":
        opts.log("[deploy] the deploy section times CPU runtimes; running it on the CPU")
    report: dict = {"threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(), "bf16_rows": cpu_bf16(opts),
                    "trained": {}}
    for path in opts.trained:
        opts.log(f"[deploy] trained checkpoint {path} ...")
        report["trained"][str(path)] = run_trained_checkpoint(str(path), opts, opts.log)
    if opts.deploy_r50:
        opts.log("[deploy] R50-FPN at 800 px, random weights ...")
        report["r50_800"] = run_r50_800(opts, opts.log)
    return report


def format_deploy(report: dict) -> list[str]:
    lines = [f"deploy (CPU, {report['threads']} threads)"]
    if not report["native_bf16"] and report.get("bf16_rows"):   # --bf16 on
        lines.append(f"  bf16 rows run anyway (--bf16 on), but {NO_BF16_REASON}")
    elif not report["native_bf16"]:
        lines.append(f"  bf16 rows skipped: {NO_BF16_REASON}")
    for path, section in report.get("trained", {}).items():
        lines.append(f"  {section['dataset']} {path} at {section['size'][0]}/{section['size'][1]}: ms/image "
                     f"(median, {section['timed_images']} images), AP on {section['test_images']} test images")
        lines.append(f"    {'runtime':22s} {'ms/image':>9s} {'time vs pytorch fp32':>21s} {'speed-up':>9s} "
                     f"{'AP':>7s} {'AP50':>7s}")
        for row in section["rows"]:
            lines.append(f"    {row['name']:22s} {row['ms_median']:9.1f} {row['ratio_to_pytorch_fp32']:20.3f}x "
                         f"{1 / row['ratio_to_pytorch_fp32']:8.2f}x {row['AP']:7.4f} {row['AP50']:7.4f}")
    if "r50_800" in report:
        section = report["r50_800"]
        lines.append(f"  R50-FPN {section['size'][0]}/{section['size'][1]}, random weights, coco128 photos "
                     f"{section['images']}: ms/image (median)")
        lines.append(f"    {'runtime':22s} {'ms/image':>9s} {'time vs torchvision fp32':>25s} "
                     f"{'speed-up vs pytorch fp32':>25s}")
        for row in section["rows"]:
            lines.append(f"    {row['name']:22s} {row['ms_median']:9.1f} {row['ratio_to_torchvision_fp32']:24.3f}x "
                         f"{1 / row['ratio_to_pytorch_fp32']:24.2f}x")
    return lines
