"""The run's history: output_dir/metrics.jsonl (every log period, evaluation and validation
loss, one JSON object per line) and output_dir/results.csv (one row per evaluation).

metrics.json keeps only the latest evaluation; this file keeps them all, so that a run can
be plotted (tools/plot_runs.py) and compared. A resumed run first drops the lines past its
checkpoint's iteration -- the iterations it is about to train again -- so the file never
holds an iteration twice.

Line shapes (AP values are fractions, None where COCO leaves them undefined):
    {"iteration": 20, "type": "train", "total_loss": .., "loss_classifier": .., "lr": .., "time": ..,
     "data_time": .., "max_mem": ..}
    {"iteration": 500, "type": "eval", "bbox": {"AP": .., ... 12 numbers, "per_category": {"circle": ..}},
     "time": {"evaluation": .., "analysis": ..}}
    {"iteration": 500, "type": "val", "val": {"loss_classifier": .., ...}}
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from detector.engine.writers import peak_memory_mb

METRICS_JSONL = "metrics.jsonl"
RESULTS_CSV = "results.csv"
# Flat scalar names "bbox_per_category/<class>" nest as record["bbox"]["per_category"][<class>].
_PER_CATEGORY = "_per_category"


def nest_scalars(scalars: dict[str, Any]) -> dict[str, Any]:
    """{"bbox/AP": x, "bbox_per_category/circle": y} -> {"bbox": {"AP": x, "per_category": {"circle": y}}}."""
    nested: dict[str, Any] = {}
    for name, value in scalars.items():
        group, _, key = name.partition("/")
        if not key:
            nested[group] = value
        elif group.endswith(_PER_CATEGORY):
            parent = nested.setdefault(group[: -len(_PER_CATEGORY)], {})
            parent.setdefault("per_category", {})[key] = value
        else:
            nested.setdefault(group, {})[key] = value
    return nested


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """The inverse of nest_scalars for one line (plus "iteration"/"type"): flat "a/b" keys."""
    flat: dict[str, Any] = {}
    for name, value in record.items():
        if not isinstance(value, dict):
            flat[name] = value
            continue
        for key, inner in value.items():
            if key == "per_category" and isinstance(inner, dict):
                flat.update({f"{name}{_PER_CATEGORY}/{cls}": ap for cls, ap in inner.items()})
            else:
                flat[f"{name}/{key}"] = inner
    return flat


def _json_line(record: dict) -> str:
    """One line; NaN/inf become null (JSON has no NaN, and readers should not choke)."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return json.dumps(clean(record)) + "\n"


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every complete line of a metrics.jsonl (a line cut by a kill is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "iteration" in record:
            records.append(record)
    return records


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so a kill never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class MetricsHistory:
    """metrics.jsonl and results.csv of one output_dir (rank 0 only)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / METRICS_JSONL
        self.csv_path = self.output_dir / RESULTS_CSV

    def records(self) -> list[dict]:
        return read_records(self.path)

    def keep_only(self, keep: Callable[[dict], bool]) -> int:
        """Rewrite the file with the records `keep` accepts; returns how many were dropped."""
        records = self.records()
        kept = [r for r in records if keep(r)]
        if len(kept) != len(records) or self.path.is_file():
            self._rewrite(kept)
        return len(records) - len(kept)

    def start(self, start_iter: int) -> int:
        """Before training from `start_iter`: drop the lines past it (a resumed run trains
        those iterations again; a fresh run, start_iter=0, starts an empty history)."""
        return self.keep_only(lambda r: int(r["iteration"]) <= start_iter)

    def append(self, records: Iterable[dict]) -> None:
        records = list(records)
        if not records:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            for record in records:
                handle.write(_json_line(record))
            handle.flush()
        if any(r.get("type") == "eval" for r in records):
            self.write_csv()

    def write_csv(self, records: list[dict] | None = None) -> None:
        """results.csv: one row per evaluation, the columns of every evaluation so far."""
        evaluations = [flatten_record(r) for r in (records if records is not None else self.records())
                       if r.get("type") == "eval"]
        columns: list[str] = []
        for row in evaluations:
            columns.extend(k for k in row if k not in columns and k != "type")
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in evaluations:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
        write_text_atomic(self.csv_path, out.getvalue())

    def _rewrite(self, records: list[dict]) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, "".join(_json_line(r) for r in records))
        self.write_csv(records)


def eval_record(iteration: int, scalars: dict[str, Any]) -> dict:
    return {"iteration": int(iteration), "type": "eval", **nest_scalars(scalars)}


class JsonlWriter:
    """A writer for PeriodicWriter: one "train" line per log period (the values the console
    prints: losses smoothed over the logging window, lr, time, data_time, max_mem), and the
    evaluation and validation records the hooks put in the storage."""

    def __init__(self, history: MetricsHistory):
        self.history = history
        done = [int(r["iteration"]) for r in history.records() if r.get("type") == "train"]
        self.last_train_iter = max(done, default=-1)

    def write(self, trainer) -> None:
        storage = trainer.storage
        records = []
        latest = storage.latest()
        if "total_loss" in latest and latest["total_loss"][1] > self.last_train_iter:
            iteration = latest["total_loss"][1]
            values = {name: storage.value(name) for name in sorted(latest) if "/" not in name}
            records.append({"iteration": iteration, "type": "train", **values,
                            "max_mem": round(peak_memory_mb(trainer.device), 1)})
            self.last_train_iter = iteration
        for record in storage.pending_records():
            records.append({"iteration": record["iteration"], "type": record["type"],
                            **nest_scalars(record["values"])})
        self.history.append(records)

    def close(self) -> None:
        pass
