"""The JSON files of an evaluation: reading ground truth and results (an error names the file
and what is wrong with it) and writing metrics and results atomically, so a run stopped
mid-write never leaves a truncated file for the next reader.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from detector.evaluation.coco_checks import EvaluationError


def load_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{what} file '{path}' does not exist.")
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{what} file '{path}' is not valid JSON: {error}") from None


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (temporary file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(obj, handle)
    os.replace(tmp, path)
    return path
