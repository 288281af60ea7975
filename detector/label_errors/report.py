"""The written results: label_errors.json, label_errors.csv and summary.md in the output folder.

label_errors.json is the ranked list (suspects.py: ENTRY_FIELDS, nothing else, so a script can
read it as documented); the CSV has the same columns (boxes as "x y w h", empty for null).
summary.md counts the suspects per kind and per class, lists the settings the run used (the
thresholds, the folds, the time), the model's recall per class, and what the loader itself
dropped or refused (zero-area boxes and the like: no model is needed to find those, and the
learned search never sees them).
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Mapping

from detector.label_errors.kinds import KINDS
from detector.label_errors.suspects import ENTRY_FIELDS, Findings

JSON_FILE = "label_errors.json"
CSV_FILE = "label_errors.csv"
SUMMARY_FILE = "summary.md"


def write_json(findings: Findings, out: Path) -> Path:
    path = out / JSON_FILE
    path.write_text(json.dumps([s.entry() for s in findings.suspects], indent=1))
    return path


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(f"{v:g}" for v in value)
    return str(value)


def write_csv(findings: Findings, out: Path) -> Path:
    path = out / CSV_FILE
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ENTRY_FIELDS)
        for suspect in findings.suspects:
            entry = suspect.entry()
            writer.writerow([_cell(entry[name]) for name in ENTRY_FIELDS])
    return path


def read_entries(out: Path) -> list[dict]:
    path = Path(out) / JSON_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run detector-find-label-errors with --output {out} first")
    return json.loads(path.read_text())


def summary_text(findings: Findings, coco: dict, settings: Mapping, run_notes: list[str], gallery: list[str]) -> str:
    kinds = Counter(s.kind for s in findings.suspects)
    class_names = [c["name"] for c in coco["categories"]]
    per_class: dict[str, Counter] = {name: Counter() for name in class_names}
    for s in findings.suspects:
        per_class.setdefault(s.given_class or s.predicted_class, Counter())[s.kind] += 1
    lines = ["# Likely label errors", "",
             f"{len(findings.suspects)} suspects in {len({s.image for s in findings.suspects})} of "
             f"{len(coco['images'])} images ({len(coco['annotations'])} given boxes). Ranked list: {JSON_FILE} "
             f"({CSV_FILE}); the top images: gallery/. Higher score = more likely an error.", "",
             "## Per kind", "", "| kind | suspects |", "| --- | --- |"]
    lines += [f"| {kind} | {kinds.get(kind, 0)} |" for kind in KINDS]
    lines += ["", "## Per class (the given class; the predicted one for a missing box)", "",
              "| class | " + " | ".join(KINDS) + " | model's recall |", "| --- |" + " --- |" * (len(KINDS) + 1)]
    for name, counts in per_class.items():
        recall = findings.class_recall.get(name)
        lines.append(f"| {name} | " + " | ".join(str(counts.get(k, 0)) for k in KINDS)
                     + f" | {'-' if recall is None else f'{recall:.2f}'} |")
    lines += ["", "The model's recall: the share of the class's given boxes that a confident prediction of that class "
              "matched (it weighs the spurious suspects).", "", "## Settings", ""]
    lines += [f"- `label_errors.{key}`: {value}" for key, value in settings.items()]
    lines += [f"- {note}" for note in run_notes]
    problems = coco.get("info", {}).get("loader_problems", [])
    lines += ["", "## Found by the loader, not by the model", ""]
    if problems:
        lines += ["The dataset's loader dropped or refused these (also `detector-check-dataset`); they are not in "
                  "the list above:", ""] + [f"- {p}" for p in problems]
    else:
        lines.append("Nothing: every box could be read.")
    if gallery:
        lines += ["", "## Gallery", ""] + [f"- [{name}](gallery/{name})" for name in gallery]
    return "\n".join(lines) + "\n"


def write_summary(findings: Findings, coco: dict, settings: Mapping, run_notes: list[str], gallery: list[str],
                  out: Path) -> Path:
    path = out / SUMMARY_FILE
    path.write_text(summary_text(findings, coco, settings, run_notes, gallery))
    return path
