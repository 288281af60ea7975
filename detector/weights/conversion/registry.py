"""The weights sources: what `--source` accepts and which `<scheme>://` names are published.

A weights source is one module plus one call, `register_source(WeightsSource(...))`: its name
(the `--source` value and the scheme of its published names, `<name>://...`), how to recognise
its files, its converter (a local file -> one ConvertedWeights record), and optionally its
published names (the part after `<name>://` -> where the publisher's file is and its hash).
The conversion entry point (convert.py), the published-names cache (detector/weights/zoo.py)
and the `--source` choices of tools/convert_weights.py all read this registry, so nothing else
needs an edit. The built-in sources (torchvision, detectron2, checkpoint) register in their own
modules, imported by convert.py; a package of yours registers by being imported, or, for the
command line and runs that name `<scheme>://...` weights, by declaring its module under the
entry-point group `detector.weights_sources` (docs/extending.md, "A new weights source").

This module only holds the table: it imports no source, so every source can import it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from detector.weights.conversion.record import ConvertedWeights
from detector.weights.formats.errors import CheckpointError

ENTRY_POINT_GROUP = "detector.weights_sources"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")   # usable as a --source value and as a URL scheme


class PublishedWeightsError(CheckpointError):
    """A published-weights name that is unknown, cannot be fetched, or whose file fails its hash."""


@dataclass(frozen=True)
class PublishedWeights:
    """One published file: where its publisher keeps it and how to check it."""

    name: str                  # canonical, e.g. "torchvision://resnet50.IMAGENET1K_V1"
    url: str
    kind: str                  # "detector" or "backbone" (ConvertedWeights.kind of its conversion)
    source: str                # the WeightsSource that converts it
    hash_algorithm: str | None  # "sha256", "md5", or None when the publisher gives no hash
    hash_prefix: str | None
    metric: str                # the publisher's figure, for docs/model_zoo.md

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _no_published_weights(rest: str) -> PublishedWeights | None:
    return None


def _no_names() -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class WeightsSource:
    """A kind of foreign weights file, and how to bring it in."""

    name: str
    # (local file, **options) -> one record; options are the keywords named in `options`.
    convert: Callable[..., ConvertedWeights]
    # Whether a local file looks like one of this source's (cheap: its name, not its bytes).
    recognises: Callable[[Path], bool]
    files: str                 # its files in words, for --help and errors: "a Detectron2 .pkl"
    # The part after "<name>://" -> its published file, or None when the name is not one of them
    # (PublishedWeightsError for a name it knows to be wrong, with the fix).
    published: Callable[[str], PublishedWeights | None] = _no_published_weights
    published_names: Callable[[], Sequence[str]] = _no_names   # every name it publishes, for messages
    options: tuple[str, ...] = ()   # the keyword options convert() takes (e.g. "coco80")

    @property
    def scheme(self) -> str:
        return f"{self.name}://"


_SOURCES: dict[str, WeightsSource] = {}
_installed_loaded = False


def register_source(source: WeightsSource) -> WeightsSource:
    """Add `source` to the registry (the one call a new source makes); returns it. Registering
    again from the same module (a reload) replaces it; another module's source of the same
    name is refused."""
    if not NAME_PATTERN.fullmatch(source.name):
        raise ValueError(f"weights source name {source.name!r}: use lower-case letters, digits and '_', starting "
                         "with a letter (it is the --source value and the scheme of its names, <name>://).")
    existing = _SOURCES.get(source.name)
    if existing is not None and existing.convert.__module__ != source.convert.__module__:
        raise ValueError(f"a weights source named '{source.name}' is already registered by "
                         f"{existing.convert.__module__}; give the one of {source.convert.__module__} another name.")
    _SOURCES[source.name] = source
    return source


def load_installed_sources() -> None:
    """Import, once per process, the modules that installed packages declare under the entry-point
    group `detector.weights_sources`; each registers its source when imported."""
    global _installed_loaded
    if _installed_loaded:
        return
    _installed_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as error:
            raise ImportError(f"weights source '{entry.name}' = '{entry.value}' (entry point group {ENTRY_POINT_GROUP}) "
                              f"does not import: {type(error).__name__}: {error}") from error
        if isinstance(loaded, WeightsSource):   # the entry point may name the source object itself
            register_source(loaded)


def registered_sources() -> tuple[WeightsSource, ...]:
    load_installed_sources()
    return tuple(_SOURCES.values())


def source_names() -> tuple[str, ...]:
    """The --source choices, in registration order."""
    return tuple(source.name for source in registered_sources())


def weights_source(name: str) -> WeightsSource:
    """The source registered as `name`; ValueError naming the valid choices otherwise."""
    load_installed_sources()
    if name not in _SOURCES:
        raise ValueError(f"--source '{name}' is not supported; valid choices: {', '.join(_SOURCES)}.")
    return _SOURCES[name]


def source_of_published_name(value: object) -> WeightsSource | None:
    """The source whose scheme `value` starts with ("torchvision://..."), or None (a path)."""
    text = str(value)
    if "://" not in text:
        return None
    return next((s for s in registered_sources() if text.startswith(s.scheme)), None)
