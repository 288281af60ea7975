#!/usr/bin/env python
"""Speed and memory, side by side with torchvision's Faster R-CNN (same weights, same photos).

    python tools/benchmark.py                          # every section, CPU or the visible GPU
    python tools/benchmark.py --sections inference train --repeats 7
    python tools/benchmark.py --device cuda --output outputs/benchmark/cuda.json

Sections: inference (batch 1 at the default test size 800/1333), inference_small (512/853),
ours_r18 (the default CPU-recipe model, alone), train (step time and peak memory at batch 2,
512 px), data (bccd loader against the bccd recipe's step), eval (faster-coco-eval against
pycocotools on the same detections), growth (memory over --growth-iterations steps), trained
(with --trained CKPT...: the fast path and bf16 against the exact path on trained weights), and
only when named, deploy (each CPU runtime -- PyTorch, ONNX Runtime, OpenVINO f32 and int8 -- with
--trained CKPT: ms per image and test-split AP; and R50-FPN at 800 px against torchvision;
docs/deployment.md) and profile (torch.profiler's top operators of the PyTorch CPU path, R50-FPN at
800 px: inference and a training step; docs/speed.md).
Medians over --repeats after --warmup rounds; within each round the candidates run back to
back, and ratios are medians of the per-round ratios. Prints a table and writes JSON.
"""
import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    from detector.benchmarking.suite import DATASETS, OPT_IN_SECTIONS, SECTIONS, Options, format_table, run_benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--sections", nargs="+", default=[s for s in SECTIONS if s not in OPT_IN_SECTIONS],
                        choices=SECTIONS, help=f"default: all but {', '.join(OPT_IN_SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--growth-iterations", type=int, default=200)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd backbone (bf16)")
    parser.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                        help="time the bf16 candidates: auto = where the device runs bf16 natively (CUDA, "
                             "AVX512-BF16/AMX CPUs); elsewhere they time oneDNN's slow emulation")
    parser.add_argument("--trained", nargs="*", default=[], metavar="CKPT",
                        help="trained checkpoints: compare the fast path and bf16 with the exact path on their test images")
    parser.add_argument("--deploy-r50", action=argparse.BooleanOptionalAction, default=True,
                        help="deploy section: also time R50-FPN at 800 px against torchvision (random weights)")
    parser.add_argument("--calibration-images", type=int, default=100, metavar="N",
                        help="deploy section: training images of each --trained checkpoint its int8 row is calibrated on")
    parser.add_argument("--bias-correction", choices=("full", "fast"), default="full",
                        help="deploy section: the int8 row's NNCF bias correction, as detector-export's (fast: for "
                        "large models; the same int8 graph and speed)")
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="the shared datasets folder")
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark/benchmark.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if not args.datasets.is_dir():
        parser.error(f"--datasets '{args.datasets}' is not a folder (expected the shared datasets: coco128, bccd, "
                     "coco_eval_reference)")

    options = Options(device=args.device, datasets=args.datasets, repeats=args.repeats, warmup=args.warmup,
                      sections=tuple(args.sections), growth_iterations=args.growth_iterations, compile=args.compile,
                      bf16=args.bf16, trained=tuple(args.trained), deploy_r50=args.deploy_r50,
                      deploy_calibration_images=args.calibration_images, deploy_bias_correction=args.bias_correction,
                      log=lambda message: print(message, flush=True))
    from detector.utils.logger import setup_logger

    setup_logger(None)  # progress of each timed section (log lines when the output is not a terminal)
    report = run_benchmark(options)
    print(format_table(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
