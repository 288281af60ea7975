"""output_dir/summary.md: one page that says how a run went, written at its end.

Everything comes from the run folder itself (metrics.jsonl, the best-checkpoint state, the
pictures on disk), so the page shows the same numbers as results.csv and TensorBoard:
the command-line overrides, the final and the best evaluation, a per-class table, time
and throughput, and links to the pictures.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Sequence

from detector.engine.history import write_text_atomic

SUMMARY_MD = "summary.md"
LABEL_STATS_PNG = "label_stats.png"


def command_line_overrides() -> list[str] | None:
    """The overrides Hydra was given (None outside a Hydra app, e.g. in library calls)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # Hydra not initialised the way we expect: fall back to "unknown"
        return None
    return None


def _number(value: Any, percent: bool) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{100 * value:.1f}" if percent else f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _metric_groups(record: dict) -> dict[str, dict]:
    """The evaluation's groups of numbers ("bbox", "cls", ...), without timings."""
    return {k: v for k, v in record.items() if isinstance(v, dict) and k != "time"}


def _lookup(record: dict | None, key: str) -> Any:
    """A flat "group/name" key (as train.best_metric names it) in a nested record."""
    if record is None:
        return None
    from detector.engine.history import flatten_record

    return flatten_record(record).get(key)


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


def summary_markdown(output_dir: Path, records: list[dict], overrides: list[str] | None, best: dict | None,
                     wall_time_s: float | None, images_per_iteration: int, max_iter: int,
                     stop_reason: str | None = None) -> str:
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    vals = [r for r in records if r.get("type") == "val"]
    final = evals[-1] if evals else None
    best_iteration = (best or {}).get("best_iteration")
    best_record = next((r for r in evals if r["iteration"] == best_iteration), None)
    last_iteration = max((int(r["iteration"]) for r in records), default=0)
    lines = [f"# Run summary: {output_dir.name}", "",
             f"Folder: `{output_dir}`. Iterations: {last_iteration} of train.max_iter={max_iter}"
             + (f" ({stop_reason})" if stop_reason else "") + ".", ""]

    lines += ["## Configuration overrides", ""]
    if overrides is None:
        lines += ["Not started from the command line; the whole configuration is in [config.yaml](config.yaml).", ""]
    elif not overrides:
        lines += ["None (the defaults); the whole configuration is in [config.yaml](config.yaml).", ""]
    else:
        lines += ["```", *overrides, "```", "", "The whole configuration is in [config.yaml](config.yaml).", ""]

    lines += ["## Metrics (%)", ""]
    columns: list[tuple[str, dict]] = []
    if final is None:
        lines += ["No evaluation was recorded.", ""]
    else:
        metric = (best or {}).get("metric")
        if best_record is not None:
            lines += [f"Best {metric} = {_number(_lookup(best_record, metric), True)} at iteration {best_iteration} "
                      f"([checkpoints/model_best.pth](checkpoints/model_best.pth)); final at iteration "
                      f"{final['iteration']} ([checkpoints/model_final.pth](checkpoints/model_final.pth)).", ""]
        if best_record is final:
            columns = [("final (also the best)", final)]
        else:
            columns = [("final", final)] + ([("best", best_record)] if best_record is not None else [])
        show_best = best_record is not None and best_record is not final
        for group, numbers in _metric_groups(final).items():
            names = [n for n in numbers if n != "per_category"]
            header = ["evaluation", "iteration"] + [f"{group}/{n}" for n in names]
            rows = [[label, rec["iteration"]] + [_number(rec.get(group, {}).get(n), True) for n in names]
                    for label, rec in columns]
            lines += [_table(header, rows), ""]
            per_class = numbers.get("per_category")
            if per_class:
                best_per_class = (best_record or {}).get(group, {}).get("per_category", {})
                header = ["class", f"final AP (iter {final['iteration']})"]
                if show_best:
                    header.append(f"best-checkpoint AP (iter {best_record['iteration']})")
                table_rows = []
                for name, value in per_class.items():
                    row = [name, _number(value, True)]
                    if show_best:
                        row.append(_number(best_per_class.get(name), True))
                    table_rows.append(row)
                lines += [f"### Per class ({group})", "", _table(header, table_rows), ""]
        if len(evals) > 1 and metric:
            lines += [f"Every evaluation's {metric}: " + ", ".join(
                f"{_number(_lookup(r, metric), True)} (iter {r['iteration']})" for r in evals)
                + ". All numbers: [results.csv](results.csv), [metrics.jsonl](metrics.jsonl).", ""]
    if vals:
        last = vals[-1]
        lines += [f"Validation loss at iteration {last['iteration']}: "
                  + ", ".join(f"{k} {_number(v, False)}" for k, v in sorted(last.get("val", {}).items())), ""]

    lines += ["## Time and throughput", ""]
    rows = []
    if wall_time_s is not None:
        rows.append(["wall time of this attempt (training and evaluations)", _duration(wall_time_s)])
    if train:
        step = train[-1].get("time")
        if step:
            rows.append(["time per iteration (median, last log period)", f"{step:.3f} s"])
            rows.append(["training throughput", f"{images_per_iteration / step:.2f} images/s "
                                                 f"({images_per_iteration} images per iteration)"])
        data = train[-1].get("data_time")
        if data is not None:
            rows.append(["data time per iteration (median)", f"{data:.3f} s"])
        if train[-1].get("max_mem") is not None:
            rows.append(["peak memory", f"{train[-1]['max_mem']:.0f} MB"])
    if final is not None and isinstance(final.get("time"), dict):
        for name, seconds in final["time"].items():
            rows.append([f"{name} time (last evaluation)", f"{seconds:.1f} s"])
    lines += [_table(["", ""], rows) if rows else "No timing was recorded.", ""]

    lines += ["## Pictures", ""]
    links = []
    if (output_dir / LABEL_STATS_PNG).is_file():
        links.append(f"- label statistics (boxes per class, sizes and aspect ratios against the anchors): "
                     f"[{LABEL_STATS_PNG}]({LABEL_STATS_PNG})")
    for label, record in columns:
        folder = output_dir / "eval" / str(record["iteration"])
        if folder.is_dir():
            pngs = sorted(p.name for p in folder.glob("*.png"))
            report = " ([error analysis](" + f"eval/{record['iteration']}/summary.md))" if (folder / "summary.md").is_file() else ""
            links.append(f"- {label} evaluation (iteration {record['iteration']}){report}: "
                         + ", ".join(f"[{p}](eval/{record['iteration']}/{p})" for p in pngs))
    links.append("- TensorBoard: `tensorboard --logdir " + str(output_dir / "tb") + "` (scalars and every picture)")
    lines += links + [""]
    if final is not None and (output_dir / "eval" / str(final["iteration"]) / "gt_vs_predictions.png").is_file():
        lines += [f"![ground truth (green) and predictions (red)](eval/{final['iteration']}/gt_vs_predictions.png)", ""]
    return "\n".join(lines)


def write_run_summary(output_dir: str | os.PathLike, records: list[dict], overrides: list[str] | None,
                      best: dict | None, wall_time_s: float | None, images_per_iteration: int, max_iter: int,
                      stop_reason: str | None = None) -> Path:
    output_dir = Path(output_dir)
    path = output_dir / SUMMARY_MD
    text = summary_markdown(output_dir, records, overrides, best, wall_time_s, images_per_iteration, max_iter,
                            stop_reason)
    write_text_atomic(path, text)
    return path
