"""Reading Detectron2 model-zoo .pkl files without running arbitrary code.

A pickle can name any importable callable and have it called while loading (that is how
`os.system` ends up in malicious files). This unpickler resolves only the few names that
numpy arrays, dtypes and scalars need (pure constructors from bytes), plus OrderedDict; any other name is refused before
anything is called. Plain dicts, lists, tuples, strings, bytes and numbers need no names.
"""
from __future__ import annotations

import collections
import io
import os
import pickle

import numpy as np


class RestrictedPickleError(pickle.UnpicklingError):
    """The file refers to something other than numpy arrays and plain containers."""


def _numpy_core():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _numpy_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.numeric import _frombuffer
    return _frombuffer


def _allowed() -> dict[tuple[str, str], object]:
    multiarray = _numpy_core()
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        # Protocol-2 pickles (Python 2 era) store bytes as latin-1 text re-encoded by this.
        ("_codecs", "encode"): __import__("codecs").encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    # Protocol 5 pickles of arrays: an array from raw bytes, dtype and shape.
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = _numpy_frombuffer()
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self._allowed = _allowed()
        self._source = source

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise RestrictedPickleError(
                f"Refusing to load '{self._source}': it refers to '{module}.{name}', and only numpy arrays, "
                "dicts, lists, tuples, strings and numbers are allowed in weight files (nothing in it was run).")
        return found

    def persistent_load(self, pid):
        raise RestrictedPickleError(f"Refusing to load '{self._source}': it uses persistent ids (a torch.save file?). "
                                    "Pass .pth files as --source torchvision.")


def load_restricted_pickle(path: str | os.PathLike):
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except RestrictedPickleError:
        raise
    except Exception as error:
        raise RestrictedPickleError(f"'{path}' is not a readable pickle ({type(error).__name__}: {error}).") from None
    _check_plain(obj, str(path))
    return obj


def _check_plain(obj, source: str, depth: int = 0) -> None:
    """Object arrays could smuggle arbitrary (if allowed) objects; weights never need them."""
    if depth > 20:
        raise RestrictedPickleError(f"'{source}' is nested too deeply to be a weight file.")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise RestrictedPickleError(f"'{source}' holds a numpy array of Python objects; only numeric arrays are allowed.")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, source, depth + 1)
            _check_plain(value, source, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_plain(value, source, depth + 1)
