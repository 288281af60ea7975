"""Fixtures of the reliability tests (helpers: reliability_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from reliability_helpers import tiny


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A tiny generated shapes dataset shared by the runs (written by the first run)."""
    return tmp_path_factory.mktemp("reliability_shapes") / "shapes"


@pytest.fixture(scope="session")
def generated_shapes(shapes_root) -> Path:
    """The tiny shapes dataset, generated now (for tests that read it without training)."""
    from detector.config import load_config
    from detector.data import class_names

    class_names(load_config(tiny(shapes_root, shapes_root.parent / "unused")[1:]))
    return shapes_root
