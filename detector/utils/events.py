"""A per-run store of scalars and images that hooks write and writers read.

The trainer owns one `EventStorage`; the loss of every iteration, the learning rate and
evaluation metrics go in as scalars, pictures as uint8 HWC arrays. Writers (console,
TensorBoard) read the history since they last wrote.
"""
from __future__ import annotations

from collections import defaultdict, deque
from statistics import median
from typing import Any


class EventStorage:
    def __init__(self, window: int = 20):
        self.iteration = 0
        self._window = window
        self._recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=self._window))
        self._latest: dict[str, tuple[float, int]] = {}
        self._images: list[tuple[str, Any, int]] = []
        # Whole records (an evaluation, a validation loss) for the metrics.jsonl writer,
        # kept as given: they may hold None where COCO leaves a number undefined.
        self._records: list[dict] = []
        self.smoothing: dict[str, bool] = {}

    def put_scalar(self, name: str, value: float, smooth: bool = True) -> None:
        value = float(value)
        self._recent[name].append(value)
        self._latest[name] = (value, self.iteration)
        self.smoothing[name] = smooth

    def put_scalars(self, smooth: bool = True, **values: float) -> None:
        for name, value in values.items():
            self.put_scalar(name, value, smooth)

    def put_image(self, tag: str, image_hwc_uint8: Any) -> None:
        self._images.append((tag, image_hwc_uint8, self.iteration))

    def latest(self) -> dict[str, tuple[float, int]]:
        """name -> (value, iteration it was put at)."""
        return dict(self._latest)

    def median(self, name: str) -> float:
        return median(self._recent[name])

    def value(self, name: str) -> float:
        """The median over the window for smoothed scalars, else the latest value."""
        if self.smoothing.get(name, True) and self._recent[name]:
            return self.median(name)
        return self._latest[name][0]

    def state_dict(self) -> dict:
        """The smoothing windows, so a resumed run logs the same smoothed values."""
        return {
            "recent": {name: list(values) for name, values in self._recent.items()},
            "latest": {name: [value, iteration] for name, (value, iteration) in self._latest.items()},
            "smoothing": dict(self.smoothing),
        }

    def load_state_dict(self, state: dict) -> None:
        for name, values in state["recent"].items():
            self._recent[name].extend(float(v) for v in values)
        self._latest.update({name: (float(v), int(i)) for name, (v, i) in state["latest"].items()})
        self.smoothing.update(state["smoothing"])

    def has_images(self) -> bool:
        return bool(self._images)

    def pop_images(self) -> list[tuple[str, Any, int]]:
        images, self._images = self._images, []
        return images

    def put_record(self, kind: str, values: dict[str, Any]) -> None:
        """One event of `kind` ("eval", "val") at the current iteration, written whole."""
        self._records.append({"iteration": self.iteration, "type": kind, "values": dict(values)})

    def has_records(self) -> bool:
        return bool(self._records)

    def pending_records(self) -> list[dict]:
        """The records put since the writers last ran (PeriodicWriter clears them after)."""
        return list(self._records)

    def clear_records(self) -> None:
        self._records = []
