"""The full benchmark: which models run in which section, and the printed table."""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from detector.benchmarking import growth, inference, peers, pipeline
from detector.benchmarking.memory import peak_memory_bytes
from detector.benchmarking.timing import interleaved_times, ratio, summarize
from detector.benchmarking.training import parameter_counts, training_step
from detector.export.int8 import DEFAULT_BIAS_CORRECTION
from detector.utils.hardware import cpu_has_native_bf16

SECTIONS = ("inference", "inference_small", "ours_r18", "train", "data", "eval", "growth", "trained", "deploy",
            "profile")
# Run only when named: deploy exports R50-FPN several times (minutes); profile is a diagnosis, not a figure.
OPT_IN_SECTIONS = ("deploy", "profile")
DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
EXACT = ["model.channels_last=false", "model.fold_norms=false"]


@dataclass
class Options:
    device: str = "auto"
    datasets: Path = DATASETS
    repeats: int = 5
    warmup: int = 1
    sections: tuple[str, ...] = SECTIONS
    test_size: tuple[int, int] = (800, 1333)
    small_size: tuple[int, int] = (512, 853)
    train_size: int = 512
    growth_iterations: int = 200
    compile: bool = False
    bf16: str = "auto"                  # auto: time bf16 only where the hardware runs it natively (bf16_timed)
    trained: tuple[str, ...] = ()       # checkpoints for the "trained" section
    trained_images: int = 30
    deploy_r50: bool = True             # deploy section: also R50-FPN at test_size against torchvision
    deploy_calibration_images: int = 100   # deploy section: training images the int8 row is calibrated on
    deploy_bias_correction: str = DEFAULT_BIAS_CORRECTION   # deploy section: the trained int8 row's, as detector-export's
    log: callable = field(default=print)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible; use --device cpu.")
    return torch.device(name)


def bf16_timed(opts: Options, device: torch.device) -> bool:
    """Whether the bf16 candidates are timed. "auto": on CUDA, and on a CPU with native bf16
    (AVX512-BF16 or AMX). Elsewhere oneDNN emulates bf16 at 5-50x fp32's time: a figure no user
    would pick (training falls back to fp32 there, engine/precision.py), which alone took most of
    the benchmark's time on such a CPU."""
    if opts.bf16 in ("on", "off"):
        return opts.bf16 == "on"
    return device.type == "cuda" or cpu_has_native_bf16()


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def r50_models(device: torch.device, min_size: int, max_size: int, compile_model: bool, bf16: bool) -> dict:
    """torchvision's R50-FPN and this project's with the same weights, in eval mode."""
    theirs = peers.torchvision_r50_fpn(min_size, max_size).to(device).eval()
    size = [f"model.input.min_size_test={min_size}", f"model.input.max_size_test={max_size}"]
    ours = peers.ours_with_same_weights(theirs, size).to(device).eval()
    exact = peers.ours_with_same_weights(theirs, size + EXACT).to(device).eval()
    variants = {"torchvision": (theirs, None), "ours_exact": (exact, None), "ours_fp32": (ours, None)}
    if bf16:
        variants["ours_bf16"] = (ours, torch.bfloat16)
    if compile_model and bf16:
        compiled = peers.ours_with_same_weights(theirs, size).to(device).eval()
        compiled.backbone = torch.compile(compiled.backbone, dynamic=True)
        variants["ours_compiled_bf16"] = (compiled, torch.bfloat16)
    return variants


def run_inference(opts: Options, device, photos, size) -> dict:
    variants = r50_models(device, *size, opts.compile, bf16_timed(opts, device))
    images = [image.to(device) for image, _, _ in photos]
    report = inference.compare_inference(variants, images, device, opts.repeats, opts.warmup)
    theirs, ours = variants["torchvision"][0], variants["ours_fp32"][0]
    with torch.inference_mode():
        report["gflops"] = {"torchvision": inference.count_flops(lambda: theirs([images[0]])) / 1e9,
                            "ours_fp32": inference.count_flops(lambda: ours([images[0]])) / 1e9}
    report["params"] = {"torchvision": parameter_counts(theirs), "ours": parameter_counts(ours)}
    return report


def run_ours_r18(opts: Options, device, photos) -> dict:
    """The default (CPU recipe) model, which torchvision has no counterpart of."""
    from detector.config import load_config
    from detector.modeling.build import build_model

    cfg = load_config([])
    model = build_model(cfg).to(device).eval()
    images = [image.to(device) for image, _, _ in photos]
    variants = {"ours_fp32": (model, None)}
    if bf16_timed(opts, device):
        variants["ours_bf16"] = (model, torch.bfloat16)
    report = inference.compare_inference(variants, images, device, opts.repeats, opts.warmup, reference=None)
    report["test_size"] = [cfg.model.input.min_size_test, cfg.model.input.max_size_test]
    report["backbone"] = cfg.backbone.name
    with torch.inference_mode():
        report["gflops"] = inference.count_flops(lambda: model([images[0]])) / 1e9
    report["params"] = parameter_counts(model)
    return report


def run_training(opts: Options, device, photos) -> dict:
    images, targets = peers.square_training_batch(photos[:2], opts.train_size, device)
    size = opts.train_size
    theirs = peers.torchvision_r50_fpn(size, size).to(device)
    ours = peers.ours_with_same_weights(theirs).to(device)
    steps = {"torchvision": training_step(theirs, images, targets, device),
             "ours_fp32": training_step(ours, images, targets, device)}
    if bf16_timed(opts, device):
        ours_bf16 = peers.ours_with_same_weights(theirs).to(device)
        steps["ours_bf16"] = training_step(ours_bf16, images, targets, device, torch.bfloat16)
    times = interleaved_times(steps, opts.repeats, opts.warmup, device)
    return {"batch": 2, "size": size, "setting": "FrozenBN, stem+res2 frozen (torchvision trainable_backbone_layers=3)",
            "step": {name: summarize(values) for name, values in times.items()},
            "ratio_to_torchvision": {name: ratio(values, times["torchvision"]) for name, values in times.items()
                                     if name != "torchvision"},
            "peak_memory_mb": {name: peak_memory_bytes(step, device) / 2**20 for name, step in steps.items()},
            "params": {"torchvision": parameter_counts(theirs), "ours": parameter_counts(ours)}}


def run_data(opts: Options, device) -> dict:
    from detector.config import load_config

    cfg = load_config(["dataset=bccd", "dataloader.num_workers=2", f"dataset.root={opts.datasets / 'bccd' / 'BCCD'}"])
    loader = pipeline.loader_throughput(cfg, batches=40, warmup=5)
    step = pipeline.recipe_step_throughput(cfg, device, opts.repeats, opts.warmup)
    return {"dataset": "bccd", "loader": loader, "training_step": step,
            "loader_over_step": loader["images_per_s"] / step["images_per_s"]}


def run_eval(opts: Options, device) -> dict:
    reference = opts.datasets / "coco_eval_reference"
    gt = json.loads((reference / "instances_val2014_100.json").read_text())
    official = json.loads((reference / "instances_val2014_fakebbox100_results.json").read_text())
    coco128 = json.loads((opts.datasets / "coco128" / "annotations" / "instances_train2017.json").read_text())
    return {"coco_eval_reference": pipeline.evaluation_time(gt, official, opts.repeats, device),
            "coco128_100_per_image": pipeline.evaluation_time(coco128, pipeline.synthetic_detections(coco128, 100, 0),
                                                             opts.repeats, device)}


def run_growth(opts: Options, device) -> dict:
    from detector.config import load_config

    cfg = load_config(["dataloader.num_workers=2"])
    return {"config": "default (shapes demo recipe)", **growth.memory_over_iterations(cfg, device, opts.growth_iterations)}


def run_trained(opts: Options, device) -> dict:
    """Trained weights, where float rounding has no near ties to reorder: the fast path
    (folded norms, channels_last) and bf16 against the exact path -- which equals torchvision's
    operations (see the inference section) -- on the checkpoint's own test images."""
    from omegaconf import OmegaConf

    from detector.benchmarking.detections import agreement
    from detector.benchmarking.held_out_images import first_test_images, single_image_test_loader
    from detector.weights.loading import load_model

    report = {}
    for path in opts.trained:
        exact = load_model(path, overrides=EXACT).to(device)
        fast = load_model(path).to(device)
        cfg = exact.config
        images = [image.to(device) for image in first_test_images(single_image_test_loader(cfg), opts.trained_images)]
        variants = {"exact": (exact, None), "fast_fp32": (fast, None)}
        if bf16_timed(opts, device):
            variants["fast_bf16"] = (fast, torch.bfloat16)
        runs = {name: inference.predictor(model, images, dtype, device) for name, (model, dtype) in variants.items()}
        rows = {name: [agreement(runs["exact"](i)[0], runs[name](i)[0]) for i in range(len(images))]
                for name in variants if name != "exact"}
        report[str(path)] = {"dataset": str(OmegaConf.select(cfg, "dataset.name")), "images": len(images),
                             **{name: summarize_agreement(values) for name, values in rows.items()}}
    return report


def summarize_agreement(rows: list[dict]) -> dict:
    return {"detections": sum(r["count_theirs"] for r in rows), "matched": sum(r["matched"] for r in rows),
            "count_equal_images": sum(r["count_theirs"] == r["count_ours"] for r in rows),
            "max_box_diff_px": max((r.get("max_box_diff_px", 0.0) for r in rows), default=0.0),
            "max_score_diff": max((r.get("max_score_diff", 0.0) for r in rows), default=0.0)}


def run_benchmark(opts: Options) -> dict:
    device = resolve_device(opts.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report: dict = {"machine": machine(device), "repeats": opts.repeats, "warmup": opts.warmup,
                    "bf16_timed": bf16_timed(opts, device)}
    photos = peers.coco_photos(opts.datasets / "coco128", 3) if {"inference", "inference_small", "ours_r18",
                                                                 "train"} & set(opts.sections) else []
    for section in opts.sections:
        opts.log(f"[benchmark] {section} ...")
        if section == "inference":
            report[section] = run_inference(opts, device, photos, opts.test_size)
        elif section == "inference_small":
            report[section] = run_inference(opts, device, photos, opts.small_size)
        elif section == "ours_r18":
            report[section] = run_ours_r18(opts, device, photos)
        elif section == "train":
            report[section] = run_training(opts, device, photos)
        elif section == "data":
            report[section] = run_data(opts, device)
        elif section == "eval":
            report[section] = run_eval(opts, device)
        elif section == "growth":
            report[section] = run_growth(opts, device)
        elif section == "trained":
            if opts.trained:
                report[section] = run_trained(opts, device)
        elif section == "deploy":
            from detector.benchmarking.deploy import run_deploy

            report[section] = run_deploy(opts, device)
        elif section == "profile":
            from detector.benchmarking.profile import run_profile

            report[section] = run_profile(opts, device)
        else:
            raise ValueError(f"unknown benchmark section '{section}'; valid: {', '.join(SECTIONS)}.")
    return report


def format_table(report: dict) -> str:
    lines = [f"machine: {report['machine']}"]
    if report.get("bf16_timed") is False:
        lines.append("bf16 not timed: this device has no native bf16 (--bf16 on times oneDNN's emulation)")
    lines.append(f"{'measurement':58s} {'median':>10s} {'ours/theirs':>12s}")

    def row(label, seconds=None, value=None, rel=None):
        median = f"{seconds:9.3f}s" if seconds is not None else (value or "")
        lines.append(f"{label:58s} {median:>10s} {'' if rel is None else f'{rel:11.3f}x':>12s}")

    for key, title in (("inference", "inference b1"), ("inference_small", "inference b1 small")):
        section = report.get(key)
        if not section:
            continue
        for name, stats in section["latency"].items():
            row(f"{title} {name}", stats["median_s"], rel=section.get("ratio_to_torchvision", {}).get(name))
        for name in ("ours_exact", "ours_fp32"):
            for i, agree in enumerate(section.get("agreement_" + name, [])):
                row(f"  {name} vs torchvision, image {i}: matched {agree['matched']}/{agree['count_theirs']}, "
                    f"top-20 {agree['top20_matched']}/20 (max {agree.get('top20_max_box_diff_px', float('nan')):.0e}px), max score diff {agree.get('max_score_diff', float('nan')):.0e}",
                    value=f"{agree.get('max_box_diff_px', float('nan')):.0e}px")
        row("  GFLOPs torchvision / ours", value=f"{section['gflops']['torchvision']:.0f}/{section['gflops']['ours_fp32']:.0f}")
    if "ours_r18" in report:
        section = report["ours_r18"]
        for name, stats in section["latency"].items():
            row(f"inference b1 {section['backbone']} {section['test_size']} {name}", stats["median_s"])
    if "train" in report:
        section = report["train"]
        for name, stats in section["step"].items():
            row(f"train step b2 {section['size']}px {name} (peak {section['peak_memory_mb'][name]:.0f} MB)",
                stats["median_s"], rel=section["ratio_to_torchvision"].get(name))
    if "data" in report:
        section = report["data"]
        row("bccd loader, 2 workers (images/s)", value=f"{section['loader']['images_per_s']:.1f}")
        row("bccd recipe training step (images/s)", value=f"{section['training_step']['images_per_s']:.1f}")
        row("  loader / step", value=f"{section['loader_over_step']:.1f}x")
    if "eval" in report:
        for name, section in report["eval"].items():
            row(f"COCO eval {name} ({section['detections']} dets) ours", section["ours"]["median_s"],
                rel=section["ratio"])
            row(f"COCO eval {name} pycocotools (max stat diff {section['max_stat_diff']:.1e})",
                section["pycocotools"]["median_s"])
    for path, section in report.get("trained", {}).items():
        for name in ("fast_fp32", "fast_bf16"):
            if name not in section:
                continue
            agree = section[name]
            row(f"trained {section['dataset']}: {name} vs exact, {section['images']} images: matched "
                f"{agree['matched']}/{agree['detections']}, max score diff {agree['max_score_diff']:.0e}",
                value=f"{agree['max_box_diff_px']:.0e}px")
    if "deploy" in report:
        from detector.benchmarking.deploy import format_deploy

        lines.extend(format_deploy(report["deploy"]))
    if "profile" in report:
        from detector.benchmarking.profile import format_profile

        lines.extend(format_profile(report["profile"]))
    if "growth" in report:
        section = report["growth"]
        row(f"memory over {section['iterations']} it ({section['measure']}) MB at {section['mb_at']}",
            value=f"{section['slope_mb_per_100_iters_second_half']:+.1f}/100it")
    return "\n".join(lines)
