"""Which of a folder's own splits train and test, and a test split carved from the one split
that exists.

The project has two splits, train and test. A layout's `train` is train; its `test` is test,
or `valid` / `val` when there is no `test`. VOC's `trainval` trains when a `test` exists.
With a single split, `carve_test` picks a seeded, stratified fraction of its images for test.
`stratified_folds` deals K folds with the same seeded, stratified draw (for the honest
predictions of detector-find-label-errors: detector/label_errors/).
"""
from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from typing import Sequence

from detector.data.coco_index import DatasetError, DatasetIndex

VALIDATION_NAMES = ("valid", "val", "validation")


@dataclasses.dataclass
class SplitPlan:
    train: str
    test: str | None           # None: carved from `train`
    notes: list[str]           # what was decided, for the log


def plan_splits(names: Sequence[str], where: str) -> SplitPlan:
    """Map a layout's own split names onto train and test (see the module docstring)."""
    names = list(names)
    notes = []
    if not names:
        raise DatasetError(f"{where}: no split with images found")
    test = "test" if "test" in names else next((n for n in VALIDATION_NAMES if n in names), None)
    if test is not None and test != "test":
        notes.append(f"no test split: its {test!r} split is the test split")
    if test == "test" and "trainval" in names:
        train = "trainval"
    elif "train" in names:
        train = "train"
    elif len(names) == 1:
        train = names[0]
    else:
        others = [n for n in names if n != test]
        if len(others) != 1:
            raise DatasetError(f"{where}: cannot tell which split trains among {names}; name it 'train'")
        train = others[0]
    unused = [n for n in names if n not in (train, test) and not (train == "trainval" and n in ("train", "val"))]
    if unused:
        notes.append(f"split(s) {unused} not used (the project trains on {train!r} and tests on {test!r})")
    if test is None:
        notes.append(f"only one split ({train!r}): a test split is carved from it")
    return SplitPlan(train, test, notes)


def carve_test(images: Sequence[tuple[str, Sequence[int]]], fraction: float, seed: int) -> list[str]:
    """The names of the test images carved from `images` ((name, labels) pairs), sorted.

    About `fraction` of the images, drawn with `random.Random(seed)` from the sorted names (so the
    carve depends on nothing but the folder, the fraction and the seed), stratified: images are
    grouped by their rarest class and each group gives its share (at least one image to each part
    when it has two or more), then a class still missing from a part gets one of its images moved
    there when no other class loses its last image by it. Every class with at least 2 images is
    then in both parts (short of contrived label overlaps). Background images share the draw."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"dataset.test_fraction={fraction}: expected a fraction between 0 and 1, e.g. 0.2")
    names = _sorted_names(images, "in the split to carve")
    if len(names) < 2:
        raise DatasetError(f"a test split cannot be carved from {len(names)} image(s); add images or a test split")
    order, labels, counts, groups = _strata(names, images, seed)
    test = set()
    for members in groups:
        share = int(round(fraction * len(members)))
        if len(members) >= 2:
            share = min(max(share, 1), len(members) - 1)
        test.update(members[:share])
    if not test:
        test.add(order[0])
    if len(test) == len(names):
        test.discard(order[-1])
    _repair_coverage(order, labels, counts, test)
    _balance(order, labels, counts, test, target=min(len(names) - 1, max(1, int(round(fraction * len(names))))))
    return sorted(test)


def _sorted_names(images: Sequence[tuple[str, Sequence[int]]], where: str) -> list[str]:
    """The images' names, sorted: the draw's starting order. A name listed twice is refused."""
    names = sorted(name for name, _ in images)
    if len(set(names)) != len(names):
        twice = sorted(n for n, k in Counter(names).items() if k > 1)
        raise DatasetError(f"{len(twice)} image(s) are listed more than once {where}, e.g. {twice[:3]} "
                           "(two annotation files for one image?); keep one annotation file per image")
    return names


def _strata(names: list[str], images: Sequence[tuple[str, Sequence[int]]], seed: int):
    """The draw shared by carve_test and stratified_folds: (order, labels, counts, groups).

    order: the sorted names shuffled by `random.Random(seed)`; labels: each image's sorted
    classes; counts: images per class; groups: the images (in `order`) grouped by their rarest
    class, groups listed by class, background images (no class) last."""
    labels = {name: sorted(set(int(c) for c in classes)) for name, classes in images}
    order = list(names)
    random.Random(int(seed)).shuffle(order)
    counts = Counter(c for name in names for c in labels[name])
    by_class: dict = defaultdict(list)
    for name in order:
        rarest = min(labels[name], key=lambda c: (counts[c], c)) if labels[name] else None
        by_class[rarest].append(name)
    keys = sorted(by_class, key=lambda k: (k is None, k if k is not None else 0))
    return order, labels, counts, [by_class[k] for k in keys]


def stratified_folds(images: Sequence[tuple[str, Sequence[int]]], folds: int, seed: int) -> list[list[str]]:
    """`folds` disjoint parts of `images` ((name, labels) pairs), each sorted, drawn as carve_test
    draws its test split (the same seeded shuffle and the same groups by rarest class): each group
    is dealt round the folds in turn, continuing where the previous group stopped, so every fold
    gets its share of every class and the folds differ in size by at most one image."""
    folds = int(folds)
    if folds < 2:
        raise DatasetError(f"folds={folds}: expected 2 or more")
    names = _sorted_names(images, "in the folds' images")
    if len(names) < folds:
        raise DatasetError(f"{len(names)} image(s) cannot be split into {folds} folds; use fewer folds")
    _, _, _, groups = _strata(names, images, seed)
    parts: list[list[str]] = [[] for _ in range(folds)]
    turn = 0
    for members in groups:
        for name in members:
            parts[turn % folds].append(name)
            turn += 1
    return [sorted(part) for part in parts]


def _balance(order: list[str], labels: dict, counts: Counter, test: set, target: int) -> None:
    """Bring the test part towards `target` images (many rare classes, one image each in test,
    overshoot it): move images whose every class keeps an image on the side it leaves."""
    for to_test in (False, True):
        while (len(test) > target) if not to_test else (len(test) < target):
            source = [n for n in (order if to_test else reversed(order)) if (n in test) != to_test]
            per_class = Counter(c for n in source for c in labels[n])
            movable = next((n for n in source if all(per_class[c] >= 2 or counts[c] < 2 for c in labels[n])), None)
            if movable is None:
                break
            (test.add if to_test else test.discard)(movable)


def _repair_coverage(order: list[str], labels: dict, counts: Counter, test: set) -> None:
    """Move one image per class missing from a part, where no other class loses its last image there."""
    for cls in sorted(counts, key=lambda c: (counts[c], c)):
        if counts[cls] < 2:
            continue
        for target_is_test in (True, False):
            side = [n for n in order if (n in test) == target_is_test]
            if any(cls in labels[n] for n in side):
                continue
            source = [n for n in order if (n in test) != target_is_test]
            per_class = Counter(c for n in source for c in labels[n])
            movable = [n for n in source if cls in labels[n]
                       and all(per_class[c] >= 2 or counts[c] < 2 for c in labels[n])]
            if movable:
                (test.add if target_is_test else test.discard)(movable[0])


def subset_index(index: DatasetIndex, keep: set[str]) -> DatasetIndex:
    """The part of `index` whose image paths are in `keep`: its records (copies, since building a
    dataset changes them), its evaluation GT and the problems of those images (problems of the
    annotation files themselves stay with both parts)."""
    records = [dataclasses.replace(r) for r in index.records if r.path in keep]
    kept_ids = {r.image_id for r in records}
    all_paths = {r.path for r in index.records}
    gt = dict(index.gt_dict)
    gt["images"] = [i for i in index.gt_dict["images"] if i["id"] in kept_ids]
    gt["annotations"] = [a for a in index.gt_dict["annotations"] if a["image_id"] in kept_ids]
    problems = [p for p in index.problems if p.file in keep or p.file not in all_paths]
    num_crowd = sum(1 for a in gt["annotations"] if a.get("iscrowd", 0))
    has_masks = any(r.segmentations is not None for r in records)
    return dataclasses.replace(index, records=records, gt_dict=gt, problems=problems, num_crowd=num_crowd,
                               has_masks=has_masks)
