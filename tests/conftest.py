import logging
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = (REPO_ROOT / ".." / "shared" / "datasets").resolve()

# Two cores on the development machine: keep intra-op threads from fighting each other. `make test`
# runs two pytest workers (pytest-xdist, one file per worker at a time): one thread each there.
# Tests that start torchrun give it --standalone (a free port), since two jobs may run at once.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def no_weight_downloads(monkeypatch):
    """Tests never download published weights (torchvision://, detectron2://): they plant files."""
    from detector.weights import zoo

    def refuse(url, destination):
        raise OSError(f"tests do not download: {url} (plant a file at {destination})")

    monkeypatch.setattr(zoo, "_download", refuse)


@pytest.fixture(autouse=True)
def absl_handler_off_the_capture_stream():
    """openvino imports absl, whose (unattached) handler keeps the sys.stderr of the moment:
    here pytest's capture stream. A later in-process Hydra run reconfigures logging and closes
    every known handler; absl's close() closes any stream that is not sys.stderr/stdout, so
    pytest lost its own stderr and the whole session died. Point it at the real stderr, which
    absl never closes (outside tests sys.stderr is the real one already)."""
    yield
    import sys

    absl_logging = sys.modules.get("absl.logging")
    handler = getattr(absl_logging, "_absl_handler", None) if absl_logging is not None else None
    python_handler = getattr(handler, "python_handler", None)
    if python_handler is not None and python_handler.stream is not sys.__stderr__:
        python_handler.stream = sys.__stderr__


@pytest.fixture(autouse=True)
def run_log_files_released():
    """An in-process run leaves its output_dir/log.txt handler on the `detector` logger, as a
    script does until it exits. Drop it after each test: pytest.ini deletes a passing test's
    folder, and a later test's log line must not try to write into it."""
    yield
    logger = logging.getLogger("detector")
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(handler)
        handler.close()


def shared_dataset(name: str) -> Path:
    """Path to ../shared/datasets/<name>, or skip the test with the reason."""
    path = SHARED_DATASETS / name
    if not path.exists():
        pytest.skip(f"shared dataset '{name}' not found at {path} (only present inside the project environment)")
    return path


@pytest.fixture
def coco128() -> Path:
    return shared_dataset("coco128")


@pytest.fixture
def bccd() -> Path:
    return shared_dataset("bccd") / "BCCD"


@pytest.fixture
def coco_eval_reference() -> Path:
    return shared_dataset("coco_eval_reference")
