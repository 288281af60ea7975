"""A dataset given as one folder (`dataset=auto dataset.path=DIR`, `dataset=yolo`, and
`dataset=voc` / `dataset=coco_format` with `dataset.path`): the layout is found from the files
(layout_detection.py), its splits become train and test (split_carving.py), and when it has
only one split, a test split is carved from it.

The carved split is recorded in `dataset.test_images` (the test images, relative to the folder):
its default, `${carved_test_images:}`, resolves to the carve when config.yaml is written, so
config.yaml and every checkpoint list the exact test images. A resume or an `eval_only` run of
that run folder takes the recorded list back (`recorded_test_images`), so it evaluates on the
same images even when the folder has gained images since; a warning says what changed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import weakref
from functools import lru_cache
from typing import Sequence

from detector.data.coco_index import DatasetError, DatasetIndex
from detector.data.formats import UNSET, DatasetFormat, check_split
from detector.data.split_carving import carve_test, plan_splits, subset_index

logger = logging.getLogger("detector")
# The lines already logged, per handler of the run's logger: setup_logger gives each run new
# handlers, so each run's log.txt gets the layout once (not once per process), and a warning
# logged while the config is composed (before the run's log file exists) reaches it too.
# (Before any run's logger is set up, as a script using the API, once per process.)
_logged: "weakref.WeakKeyDictionary[logging.Handler | logging.Logger, set[str]]" = weakref.WeakKeyDictionary()


def _log_once(message: str, *args, warning: bool = False) -> None:
    text = message % args if args else message
    seen = _logged.setdefault(logger.handlers[0] if logger.handlers else logger, set())
    if text not in seen:
        seen.add(text)
        (logger.warning if warning else logger.info)(text)


def folder_signature(path: str) -> str:
    """A hash of every file's name, size and modification time under `path`: the caches below
    are keyed by it, so a folder that changes is read again."""
    digest = hashlib.sha1()
    for parent, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            try:
                stat = os.stat(os.path.join(parent, name))
            except OSError:
                continue
            digest.update(f"{os.path.relpath(os.path.join(parent, name), path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@lru_cache(maxsize=4)
def _layout(path: str, layout: str, _signature: str):
    from detector.data.layout_detection import find_layout

    return find_layout(path, layout)


@lru_cache(maxsize=2)
def _single_split_index(path: str, layout: str, split: str, classes: tuple, use_difficult: bool,
                        _signature: str) -> DatasetIndex:
    """The whole of a one-split folder, read once for the carve and both parts (subset_index copies)."""
    return _layout(path, layout, _signature).index(split, list(classes), use_difficult)


class FolderFormat(DatasetFormat):
    """A dataset folder in any layout it holds (`layout`: auto | coco | voc | yolo).

    path: the dataset folder. test_fraction, split_seed: the carve of a test split when the
    folder has one split only (split_seed is its own key, so a new training `seed` keeps the test
    set). test_images: the test images (relative to `path`) of a carved split; None carves anew.
    use_difficult: VOC difficult objects are trained and evaluated too."""

    def __init__(self, *, path: str | None, layout: str, test_fraction: float, split_seed: int,
                 test_images: Sequence[str] | None, use_difficult: bool, **common):
        super().__init__(**common)
        self.path = None if path is None or path == UNSET else os.path.abspath(str(path))
        self.layout_name = str(layout)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.test_images = None if test_images is None else [str(t) for t in test_images]
        self.use_difficult = bool(use_difficult)

    # ---- what was found ------------------------------------------------------------------------
    def folder(self) -> str:
        if self.path is None:
            option = {"auto": "auto", "yolo": "yolo", "voc": "voc", "coco": "coco_format"}.get(self.layout_name, "auto")
            raise DatasetError(f"dataset={option} needs dataset.path, the folder of your dataset, e.g. "
                               f"dataset={option} dataset.path=my_data/ (see docs/your_data.md)")
        if not os.path.isdir(self.path):
            raise DatasetError(f"dataset.path={self.path} does not exist or is not a folder")
        return self.path

    def signature(self) -> str:
        return folder_signature(self.folder())

    def layout(self):
        return _layout(self.folder(), self.layout_name, self.signature())

    def plan(self, log: bool = True):
        """The split plan; logs the layout, classes and decisions (once per run's logger) unless
        `log` is false (the config resolver, which runs before the run's log file exists)."""
        found = self.layout()
        plan = plan_splits(found.split_names(), self.folder())
        if not log:
            return plan
        classes = self.class_names()
        _log_once("dataset.path=%s: %s; %d classes: %s", self.folder(), found.description, len(classes),
                  ", ".join(classes))
        for note in [*found.notes, *plan.notes]:
            _log_once("dataset.path=%s: %s", self.folder(), note)
        return plan

    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes is not None else self.layout().class_names()

    def has_masks(self) -> bool:
        return self.layout().may_have_masks() and self.index("train").has_masks

    def check(self, splits) -> None:
        self.folder()

    # ---- splits --------------------------------------------------------------------------------
    def index(self, split: str) -> DatasetIndex:
        check_split(split)
        plan = self.plan()
        if plan.test is not None:
            if self.test_images is not None:
                raise DatasetError(f"dataset.test_images is set, but dataset.path={self.folder()} has its own test split "
                                   f"({plan.test!r}); leave dataset.test_images unset (null)")
            index = self.layout().index(plan.train if split == "train" else plan.test, self.class_names(),
                                        self.use_difficult)
            source = f"its {(plan.train if split == 'train' else plan.test)!r} split"
        else:
            full = self._full_index(plan.train)
            test = set(self._absolute(self.carved_test_images(), full))
            keep = test if split == "test" else {r.path for r in full.records} - test
            index = subset_index(full, keep)
            source = (f"carved from its {plan.train!r} split (dataset.test_fraction={self.test_fraction}, "
                      f"dataset.split_seed={self.split_seed})")
        _log_once("dataset.path=%s: %s: %d images, %d boxes, %s", self.folder(), split, len(index.records),
                  sum(len(r.boxes) for r in index.records), source)
        return index

    def _full_index(self, split: str) -> DatasetIndex:
        return _single_split_index(self.folder(), self.layout_name, split, tuple(self.class_names()),
                                   self.use_difficult, self.signature())

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.folder()).replace(os.sep, "/")

    def carved_test_images(self, log: bool = True) -> list[str] | None:
        """The test images (relative to the folder) of a carved split: dataset.test_images when
        set, else the carve; None when the folder has its own test split."""
        plan = self.plan(log)
        if plan.test is not None:
            return None
        if self.test_images is not None:
            return list(self.test_images)
        full = self._full_index(plan.train)
        return carve_test([(self.relative(r.path), r.labels.tolist()) for r in full.records], self.test_fraction,
                          self.split_seed)

    def _absolute(self, names: list[str], full: DatasetIndex) -> list[str]:
        by_relative = {self.relative(r.path): r.path for r in full.records}
        missing = [n for n in names if n not in by_relative]
        if missing:
            raise DatasetError(
                f"dataset.test_images names {len(missing)} image(s) not in dataset.path={self.folder()}, e.g. "
                f"{missing[:3]}: the folder lost them since the split was recorded. Restore them, or set "
                "dataset.test_images=null to carve a new test split (a new run: its results do not compare with "
                "the old ones).")
        return [by_relative[n] for n in names]


# ---- the record in config.yaml -----------------------------------------------------------------

def recorded_test_images(root_cfg) -> list[str] | None:
    """What `${carved_test_images:}` resolves to: the test images of the carved split (None when
    the folder has its own test split, or the dataset is not a folder).

    A resume (train.resume) or an eval_only run takes the list its run folder's config.yaml
    recorded (output_dir's, or that of the run model.weights comes from), when it was carved
    from the same folder with the same rule, so it evaluates on the same images."""
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    data = root_cfg.dataset
    values = {}
    for key in data:
        if key == "test_images":
            continue
        if OmegaConf.is_missing(data, key):
            values[key] = UNSET
        else:
            values[key] = OmegaConf.to_container(data[key], resolve=True) if OmegaConf.is_config(data[key]) else data[key]
    try:
        # Built as build_format builds it (which would resolve this very key again), without the record.
        kwargs = {k: v for k, v in values.items() if k not in ("_target_", "name")}
        fmt = get_object(str(values["_target_"]))(**kwargs, test_images=None, name=str(values.get("name", "dataset")))
        folder_format = fmt if isinstance(fmt, FolderFormat) else getattr(fmt, "folder_format", lambda: None)()
        if folder_format is None:
            return None
        fresh = folder_format.carved_test_images(log=False)   # index() logs the layout, in the run's log
    except (DatasetError, FileNotFoundError, TypeError, ImportError, KeyError):
        # Resolving this key is no place to fail: the format, built without the record, raises the
        # same error where the tools catch it (one message naming the folder, no traceback).
        return None
    if fresh is None:
        return None
    recorded, where = _previous_record(root_cfg, folder_format)
    if recorded is None or recorded == fresh:
        return fresh
    added = sorted(set(fresh) - set(recorded))
    _log_once("dataset.path=%s changed since %s recorded its carved test split (%d test images then; a new carve "
              "would give %d, %d of them not in the record). The recorded test images are kept, so that this run "
              "evaluates on the same images; images added since then train.", folder_format.folder(), where,
              len(recorded), len(fresh), len(added), warning=True)
    return recorded


def _previous_record(root_cfg, fmt: FolderFormat) -> tuple[list[str] | None, str | None]:
    """(test_images, config.yaml) recorded by the run this one continues or evaluates, if any."""
    from omegaconf import OmegaConf

    candidates = []
    eval_only = bool(root_cfg.eval_only)
    if bool(root_cfg.train.resume) or eval_only:
        candidates.append(os.path.join(str(root_cfg.output_dir), "config.yaml"))
    weights = root_cfg.model.weights
    if eval_only and weights and os.path.isfile(str(weights)):
        run_folder = os.path.dirname(os.path.dirname(os.path.abspath(str(weights))))   # <run>/checkpoints/x.pth
        candidates.append(os.path.join(run_folder, "config.yaml"))
    for path in candidates:
        if not os.path.isfile(path):
            continue
        previous = OmegaConf.load(path)
        recorded = OmegaConf.select(previous, "dataset.test_images", default=None)
        same_folder = OmegaConf.select(previous, "dataset.path", default=None)
        same_rule = (OmegaConf.select(previous, "dataset.test_fraction", default=None) == fmt.test_fraction
                     and OmegaConf.select(previous, "dataset.split_seed", default=None) == fmt.split_seed)
        if isinstance(recorded, list) or OmegaConf.is_list(recorded):
            if same_folder and os.path.abspath(str(same_folder)) == fmt.folder() and same_rule:
                return [str(n) for n in recorded], path
    return None, None
