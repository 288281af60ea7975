"""One logger for a run: console and output_dir/log.txt on rank 0, warnings only elsewhere."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "detector"
_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"


def setup_logger(output_dir: str | Path | None, rank: int = 0, name: str = LOGGER_NAME) -> logging.Logger:
    """Configure the `detector` logger (idempotent: earlier handlers are replaced).

    Other ranks print warnings and errors only, prefixed with their rank, so a crash on
    any rank is still visible while the console is not flooded.
    """
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(_FORMAT if rank == 0 else f"[rank {rank}] " + _FORMAT, "%m/%d %H:%M:%S"))
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.addHandler(console)
    if rank == 0 and output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(output_dir) / "log.txt", mode="a")
        file_handler.setFormatter(logging.Formatter(_FORMAT, "%m/%d %H:%M:%S"))
        logger.addHandler(file_handler)
    return logger
