"""Runs compared: loss, lr and AP against iteration, one line per run, and a table of each
run's best and final AP with what was changed to get it (tools/plot_runs.py).

Everything is read from the run folders: metrics.jsonl (detector/engine/history.py) for
the curves and numbers; the run's overrides.yaml (a sweep job's, or Hydra's .hydra/overrides.yaml)
when the folder has one, else the config.yaml keys that differ between the runs compared (against the
defaults for a single run). A folder without metrics.jsonl, e.g. a Hydra sweep's, stands
for every run found below it (one line per job).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from detector.engine.history import METRICS_JSONL, flatten_record, read_records  # noqa: E402

# Keys that differ between any two runs without being a choice worth listing.
_IGNORED_KEYS = ("output_dir",)


class RunFolderError(ValueError):
    """A path given is not a run folder and holds none."""


@dataclass
class Run:
    label: str
    path: Path
    records: list[dict]
    overrides: list[str] = field(default_factory=list)

    def series(self, kind: str, key: str) -> tuple[list[int], list[float]]:
        """(iterations, values) of a flat key ("total_loss", "bbox/AP") in lines of `kind`."""
        xs, ys = [], []
        for record in self.records:
            if record.get("type") != kind:
                continue
            value = flatten_record(record).get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                xs.append(int(record["iteration"]))
                ys.append(float(value))
        return xs, ys


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Each path is a run folder (has metrics.jsonl) or holds run folders below it."""
    runs: list[Run] = []
    for given in paths:
        path = Path(given)
        if (path / METRICS_JSONL).is_file():
            runs.append(Run(path.name or str(path), path, read_records(path / METRICS_JSONL)))
            continue
        if not path.is_dir():
            raise RunFolderError(f"{path} does not exist; give run folders (a training output_dir) or a folder "
                                 "holding them (a Hydra sweep's).")
        found = sorted(p.parent for p in path.rglob(METRICS_JSONL))
        if not found:
            raise RunFolderError(f"{path} holds no {METRICS_JSONL} (nor does any folder below it): is it a training "
                                 "run's output_dir? Runs written before metrics.jsonl existed cannot be plotted.")
        for run_dir in found:
            label = f"{path.name}/{run_dir.relative_to(path)}" if path.name else str(run_dir)
            runs.append(Run(label, run_dir, read_records(run_dir / METRICS_JSONL)))
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:  # e.g. two runs both named "out": tell them apart by path
            run.label = str(run.path)
    _fill_overrides(runs)
    return runs


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: config}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _default_config() -> dict:
    """The defaults of conf/ (what a run without overrides would have used)."""
    try:
        from omegaconf import OmegaConf

        from detector.config import load_config

        return OmegaConf.to_container(load_config([]), resolve=False)
    except Exception:  # conf/ unavailable or a default not composable here: no reference
        return {}


def _fill_overrides(runs: list[Run]) -> None:
    """Hydra's overrides.yaml where a run has one; the others get their config diff."""
    configs: dict[int, dict] = {}
    for index, run in enumerate(runs):
        # a sweep job of train_net/train_cls keeps it in its own folder (detector/engine/sweep.py),
        # Hydra in .hydra/ when hydra.output_subdir is set
        overrides = _read_yaml(run.path / "overrides.yaml")
        if not isinstance(overrides, list):
            overrides = _read_yaml(run.path / ".hydra" / "overrides.yaml")
        if isinstance(overrides, list):
            run.overrides = [str(o) for o in overrides if not str(o).startswith(_IGNORED_KEYS)]
            continue
        config = _read_yaml(run.path / "config.yaml")
        if isinstance(config, dict):
            configs[index] = _flatten(config)
    if not configs:
        return
    references = list(configs.values())
    if len(references) == 1:
        references.append(_flatten(_default_config()))
    keys = sorted({k for flat in references for k in flat})
    differing = [k for k in keys if not k.startswith(_IGNORED_KEYS)
                 and len({repr(flat.get(k, "<unset>")) for flat in references}) > 1]
    for index, flat in configs.items():
        runs[index].overrides = [f"{k}={_format(flat.get(k))}" for k in differing if k in flat]


def _format(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return "null" if value is None else str(value)


def summary_rows(runs: Sequence[Run], metric: str = "bbox/AP", mode: str = "max") -> list[dict[str, Any]]:
    """Per run: best and final value of `metric` (with iterations), last iteration, overrides."""
    rows = []
    for run in runs:
        xs, ys = run.series("eval", metric)
        row: dict[str, Any] = {"run": run.label, "best": None, "best_iteration": None, "final": None,
                               "final_iteration": None,
                               "iterations": max((int(r["iteration"]) for r in run.records), default=0),
                               "overrides": " ".join(run.overrides)}
        if ys:
            pick = max if mode == "max" else min
            best = pick(range(len(ys)), key=lambda i: (ys[i], -xs[i]) if mode == "max" else (ys[i], xs[i]))
            row.update(best=ys[best], best_iteration=xs[best], final=ys[-1], final_iteration=xs[-1])
        rows.append(row)
    return rows


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def table_markdown(rows: Sequence[dict], metric: str) -> str:
    lines = [f"| run | best {metric} (%) | at iteration | final {metric} (%) | at iteration | iterations | overrides |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        overrides = f"`{row['overrides']}`" if row["overrides"] else "(defaults)"
        lines.append(f"| {row['run']} | {_percent(row['best'])} | {row['best_iteration'] or ''} | "
                     f"{_percent(row['final'])} | {row['final_iteration'] or ''} | {row['iterations']} | "
                     f"{overrides} |")
    return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["run", "best", "best_iteration", "final", "final_iteration",
                                             "iterations", "overrides"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def _plot(runs: Sequence[Run], panels: Sequence[tuple[str, str, str]], path: Path, log_y: bool = False) -> str:
    """One panel per (kind, key, title), one line per run."""
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), squeeze=False)
    for axis, (kind, key, title) in zip(axes.flat, panels):
        for run in runs:
            xs, ys = run.series(kind, key)
            if xs:
                axis.plot(xs, ys, marker="o" if kind == "eval" or len(xs) < 15 else None, markersize=3,
                          linewidth=1.2, label=run.label)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("iteration")
        values = [v for run in runs for v in run.series(kind, key)[1]]
        if log_y and values and min(values) > 0 and max(values) / min(values) > 10:  # only when it spans decades
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
                      bbox_to_anchor=(0.5, 0.0))
    figure.tight_layout(rect=(0, 0.04 + 0.02 * math.ceil(len(labels) / 4), 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def _train_keys(runs: Sequence[Run]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        for record in run.records:
            if record.get("type") == "train":
                keys.extend(k for k in record if (k.startswith("loss") or k == "total_loss") and k not in keys)
    return sorted(keys, key=lambda k: (k != "total_loss", k))


def write_comparison(runs: Sequence[Run], output: str | Path, metric: str = "bbox/AP",
                     mode: str = "max") -> dict[str, Path]:
    """loss.png, lr.png, ap.png, runs.md and runs.csv in `output`; returns their paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    losses = [("train", key, key) for key in _train_keys(runs)] or [("train", "total_loss", "total_loss")]
    files = {
        "loss": output / _plot(runs, losses, output / "loss.png", log_y=True),
        "lr": output / _plot(runs, [("train", "lr", "learning rate")], output / "lr.png"),
    }
    eval_panels = [("eval", metric, metric)]
    if metric != "bbox/AP50" and any(run.series("eval", "bbox/AP50")[0] for run in runs):
        eval_panels.append(("eval", "bbox/AP50", "bbox/AP50"))
    files["ap"] = output / _plot(runs, eval_panels, output / "ap.png")
    rows = summary_rows(runs, metric, mode)
    (output / "runs.md").write_text(table_markdown(rows, metric))
    (output / "runs.csv").write_text(table_csv(rows))
    files.update(table=output / "runs.md", csv=output / "runs.csv")
    return files
