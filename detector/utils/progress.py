"""Progress of long jobs (evaluation, prediction, dataset checks, crops, shapes, benchmark).

One rule everywhere:
- rank 0 on a terminal: a tqdm bar with count, rate and ETA;
- rank 0 without a terminal (CI, a log file, a pipe): a line through the `detector` logger
  every N items, with count, rate and ETA, and one when the job ends;
- any other rank: nothing, so N processes do not print N bars.

Training does not use this: its periodic log line (losses, lr, ETA) is its progress.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
import time
from typing import IO, Iterable, Iterator, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from detector.utils.distributed import get_rank, is_distributed

T = TypeVar("T")
LOGGER_NAME = "detector"
# Without a terminal, about this many lines per job, but at least one line per this many items.
LINES_PER_JOB = 10
MAX_EVERY = 100


def current_rank() -> int:
    """The process-group rank, or torchrun's RANK before the group exists (e.g. while the
    shapes dataset is generated at start-up)."""
    if is_distributed():
        return get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_terminal(stream: IO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or odd stream: treat it as a file
        return False


def terminal_width(stream: IO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


def default_every(total: int | None) -> int:
    if not total:
        return MAX_EVERY
    return max(1, min(MAX_EVERY, math.ceil(total / LINES_PER_JOB)))


def _console_redirect(logger: logging.Logger):
    """Route the logger's console lines above the bar (tqdm.write) while it is shown, so a
    log line does not tear the bar; a logger without a console handler is left alone."""
    consoles = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                and getattr(h, "stream", None) in (sys.stdout, sys.stderr)]
    return logging_redirect_tqdm([logger]) if consoles else contextlib.nullcontext()


class Progress:
    """Counts items of a job; use as a context manager, call update(n) per item or batch.

    total: items expected (None when unknown: no percentage, no ETA). every: items between
    two log lines without a terminal (default: about 1/10 of the job, at most 100).
    stream: where a bar would go (stderr by default; its isatty() picks bar or log lines).
    rank: defaults to this process's rank; only rank 0 shows anything.
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", every: int | None = None,
                 stream: IO | None = None, rank: int | None = None, logger: logging.Logger | None = None,
                 leave: bool = True):
        if every is not None and every < 1:
            raise ValueError(f"progress every={every}: must be >= 1 item between log lines.")
        self.total = None if total is None else int(total)
        self.desc, self.unit = desc, unit
        self.every = every or default_every(self.total)
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.count = 0
        self._start = time.perf_counter()
        self._last_logged = 0
        self._bar: tqdm | None = None
        self._redirect = contextlib.ExitStack()
        stream = sys.stderr if stream is None else stream
        rank = current_rank() if rank is None else rank
        if rank != 0:
            self.mode = "off"
        elif is_terminal(stream):
            self.mode = "bar"
            self._redirect.enter_context(_console_redirect(self.logger))
            # A terminal that reports no width (some containers' ptys) would get an empty bar.
            width = terminal_width(stream)
            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=stream, leave=leave,
                             dynamic_ncols=width > 0, ncols=None if width > 0 else 100,
                             nrows=None if width > 0 else 20)
        else:
            self.mode = "log"

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.mode == "bar":
            self._bar.update(n)
        elif self.mode == "log" and self.count // self.every > self._last_logged // self.every:
            self._log()

    def status(self) -> str:
        """'desc: 40/100 images (40%), 2.51 images/s, elapsed 00:16, ETA 00:23'
        (or '25.10 s/images' when an item takes more than a second)."""
        elapsed = time.perf_counter() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        if self.total:
            count = f"{self.count}/{self.total} {self.unit} ({100 * self.count / self.total:.0f}%)"
        else:
            count = f"{self.count} {self.unit}"
        # Slow items read better as seconds per item, as tqdm shows them.
        speed = f"{1 / rate:.2f} s/{self.unit}" if 0 < rate < 1 else f"{rate:.2f} {self.unit}/s"
        text = f"{self.desc}: {count}, {speed}, elapsed {tqdm.format_interval(elapsed)}"
        if self.total and rate > 0 and self.count < self.total:
            text += f", ETA {tqdm.format_interval((self.total - self.count) / rate)}"
        return text

    def _log(self) -> None:
        self._last_logged = self.count
        self.logger.info(self.status())

    def close(self) -> None:
        if self.mode == "bar":
            self._bar.close()
            self._redirect.close()
        elif self.mode == "log" and self.count != self._last_logged:
            self._log()  # the last items, so a log always ends with the final count
        self.mode = "off"

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          every: int | None = None, **kwargs) -> Iterator[T]:
    """Yield the items of `iterable`, counting each one (see Progress). `total` defaults to
    len(iterable) when it has one."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(total=total, desc=desc, unit=unit, every=every, **kwargs) as progress:
        for item in iterable:
            yield item
            progress.update(1)
