"""The extension tests: code a user writes outside the library (user_plugins/) and a config
folder (conf/) added with hydra.searchpath, with no edit inside detector/."""
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parent / "conf"
PLUGINS_ROOT = Path(__file__).resolve().parent   # holds the user_plugins package


@pytest.fixture
def searchpath() -> str:
    """The override that adds this folder's configs to Hydra's search path."""
    return f"hydra.searchpath=[file://{CONF}]"
