"""Progress of long jobs: log lines every N items without a terminal, a bar on one, silence off rank 0."""
from __future__ import annotations

import io
import logging
import re

import pytest

from detector.utils.progress import Progress, track


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log():
    """The lines the `detector` logger emits (a handler of its own: setup_logger, called by other
    tests in this process, stops propagation to pytest's caplog)."""
    logger = logging.getLogger("detector")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_without_a_terminal_logs_every_n_items_with_count_rate_and_eta(log):
    stream = io.StringIO()  # not a TTY, as in CI or a log file
    items = list(track(range(10), desc="evaluation", unit="images", every=4, stream=stream, rank=0))
    assert items == list(range(10))
    lines = list(log)
    # At 4 and 8, then the final count when the job ends.
    assert [re.search(r"evaluation: (\d+)/10 images", line).group(1) for line in lines] == ["4", "8", "10"]
    for line in lines:
        assert re.search(r"\d+\.\d\d images/s", line), line
        assert "elapsed" in line
    assert "ETA" in lines[0] and "ETA" not in lines[-1]  # nothing left to wait for at the end
    assert "(40%)" in lines[0] and "(100%)" in lines[-1]
    assert stream.getvalue() == ""  # no bar characters in a log file


def test_batches_crossing_several_marks_log_once_and_unknown_total_has_no_eta(log):
    with Progress(desc="crops", unit="boxes", every=5, stream=io.StringIO(), rank=0) as progress:
        progress.update(3)   # below the first mark: no line
        progress.update(9)   # 12 crosses 5 and 10: one line
        progress.update(2)   # 14: no new mark
    lines = list(log)
    assert len(lines) == 2
    assert lines[0].startswith("crops: 12 boxes, ") and lines[1].startswith("crops: 14 boxes, ")
    assert all("ETA" not in line and "%" not in line for line in lines)


@pytest.mark.parametrize("terminal", [False, True], ids=["log", "tty"])
def test_other_ranks_are_silent(log, terminal):
    stream = FakeTerminal() if terminal else io.StringIO()
    assert list(track(range(7), desc="evaluation", every=1, stream=stream, rank=1)) == list(range(7))
    assert log == []
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar_and_no_log_lines(log):
    stream = FakeTerminal()
    assert sum(track(range(5), desc="predict", unit="images", every=1, stream=stream, rank=0)) == 10
    assert log == []
    shown = stream.getvalue()
    assert "predict" in shown and "5/5" in shown and "images/s" in shown


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every=0"):
        Progress(every=0, rank=0, stream=io.StringIO())


def test_rank_comes_from_torchrun_before_the_process_group_exists(log, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    assert list(track(range(4), every=1, stream=FakeTerminal())) == list(range(4))
    assert log == []
    monkeypatch.setenv("RANK", "0")
    list(track(range(4), desc="shapes", every=2, stream=io.StringIO()))
    assert [line.split(",")[0] for line in log] == ["shapes: 2/4 it (50%)", "shapes: 4/4 it (100%)"]


def test_slow_items_are_reported_in_seconds_per_item(log, monkeypatch):
    clock = iter([100.0, 150.0, 200.0])  # start, then 25 s per image
    monkeypatch.setattr("detector.utils.progress.time.perf_counter", lambda: next(clock))
    with Progress(total=4, desc="predict", unit="images", every=2, stream=io.StringIO(), rank=0) as progress:
        progress.update(2)
        progress.update(2)
    assert log == ["predict: 2/4 images (50%), 25.00 s/images, elapsed 00:50, ETA 00:50",
                   "predict: 4/4 images (100%), 25.00 s/images, elapsed 01:40"]
