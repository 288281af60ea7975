"""train.time_budget's values read as seconds: "15m", "2h", "1h30m", "90s", a number of minutes,
or "auto". A leaf module, so the recipe (which weighs the input size against the budget) and the
label-error job read budgets without importing the engine that spends them
(detector/engine/time_budget.py)."""
from __future__ import annotations

import math
import re
from typing import Any, Mapping


class TimeBudgetError(ValueError):
    """A train.time_budget value that cannot be read (the message says what to write)."""


def parse_time_budget(value: Any, device_type: str = "cpu", auto_minutes: Mapping | None = None) -> float | None:
    """Seconds of `value`: "15m", "2h", "90s", "1h30m", a number of minutes, "auto" (the
    device's default from `auto_minutes`: {"cpu": 10, "cuda": 30}), None/"null": no budget."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        return None
    if isinstance(value, bool):
        raise TimeBudgetError(f"train.time_budget={value!r}: write a duration such as 15m, 2h or 90 (minutes).")
    if isinstance(value, (int, float)):
        seconds = float(value) * 60
    else:
        text = str(value).strip().lower()
        if text == "auto":
            if auto_minutes is None:
                raise TimeBudgetError("train.time_budget=auto needs the device's default minutes.")
            return float(auto_minutes["cuda" if device_type == "cuda" else "cpu"]) * 60
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s)?", text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text) * 60
        elif parts and any(parts.groups()):
            hours, minutes, secs = (float(g) if g else 0.0 for g in parts.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        else:
            raise TimeBudgetError(f"train.time_budget={value!r}: write a duration such as 15m, 2h, 1h30m, 90s "
                                  "or a number of minutes.")
    if not math.isfinite(seconds) or seconds <= 0:
        raise TimeBudgetError(f"train.time_budget={value!r} must be a positive duration (15m, 2h, minutes).")
    return seconds


def configured_budget_s(train: Any, device_type: str) -> float | None:
    """Seconds of a config's train.time_budget on `device_type` ("cpu" or "cuda"), "auto" read
    from train.budget.auto_cpu_minutes / auto_gpu_minutes; None: no budget."""
    budget = train.budget
    return parse_time_budget(train.time_budget, device_type,
                             {"cpu": budget.auto_cpu_minutes, "cuda": budget.auto_gpu_minutes})
