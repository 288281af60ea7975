"""The error every weights reader raises for a file it cannot use.

Kept in a module of its own, below every format, so that each format module and every layer
above can raise and catch the same class without importing one another.
"""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, damaged or not allowed to be loaded."""
