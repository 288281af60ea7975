"""Configs stored in checkpoints written by earlier versions, brought to today's layout.

A checkpoint carries the fully resolved config it was trained with. Keys added to conf/ since
then are filled here with the value that reproduces the old behaviour, explicitly and in one
place (Detectron2 upgrades its stored configs the same way), instead of reading conf/ again.
"""
from __future__ import annotations

from typing import Any


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` (a checkpoint's stored config) in today's layout."""
    return dict(config)
