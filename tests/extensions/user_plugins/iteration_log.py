"""A user's own training hook, outside the library: it notes every iteration it sees and
the evaluation's AP when there is one, stores a count for the writers, and writes its notes
to a JSON file at the end. Listed in train.hooks by tests/extensions/conf/hooks/iteration_log.yaml."""
from __future__ import annotations

import json
from pathlib import Path

from detector.engine import HookBase
from detector.utils.distributed import is_main_process


class IterationLog(HookBase):
    def __init__(self, path: str, period: int):
        self.path = Path(path)
        self.period = int(period)
        self.seen: list[dict] = []

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        ap = self.trainer.storage.latest().get("bbox/AP")   # (value, iteration it was put at)
        self.seen.append({"iteration": done, "bbox/AP": None if ap is None else list(ap)})
        if done % self.period == 0:
            # Stored now, written by the writers that run after this hook, at this iteration.
            self.trainer.storage.put_record("user", {"user/iterations_seen": len(self.seen)})

    def after_train(self) -> None:
        if is_main_process():
            self.path.write_text(json.dumps(self.seen))
