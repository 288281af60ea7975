"""The evaluation loop reports progress in images of this rank's shard (log lines without a terminal)."""
from __future__ import annotations

import io
import logging
import re
from types import SimpleNamespace

import torch

from detector.evaluation.inference import run_inference


class OneBoxPerImage(torch.nn.Module):
    def forward(self, images):
        return [{"boxes": torch.tensor([[1.0, 2.0, 5.0, 8.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])} for _ in images]


class Loader:
    """Batches of two images as build_test_loader gives them, with its sampler's shard indices;
    image 5 is unreadable (listed in "skipped" instead)."""

    def __init__(self, count: int):
        self.batch_sampler = SimpleNamespace(indices=list(range(count)))
        self.count = count

    def __iter__(self):
        for begin in range(0, self.count, 2):
            ids = [i for i in range(begin, min(begin + 2, self.count)) if i != 5]
            yield {"images": [torch.rand(3, 8, 8) for _ in ids], "image_ids": ids,
                   "skipped": ["broken.jpg"] if begin == 4 else []}


def test_inference_logs_images_done_of_the_shard(monkeypatch):
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("detector")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: log lines, as in CI
    try:
        out = run_inference(OneBoxPerImage(), Loader(9), {1: 1}, torch.device("cpu"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(out.image_ids) == 8 and out.skipped == ["broken.jpg"]
    counts = [re.search(r"^inference: (\d+)/9 images", line) for line in lines]
    done = [int(m.group(1)) for m in counts if m]
    # Every image of the shard counts, the unreadable one too, so the last line says 9/9.
    assert done and done == sorted(done) and done[-1] == 9, lines
    assert any("images/s" in line for line in lines)
