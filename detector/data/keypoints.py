"""Keypoints in the data: what a dataset's keypoints are, how a flip renames them, and the
per-box [M, K, 3] arrays a keypoint model trains on.

COCO states keypoints per category ("keypoints": names, "skeleton": 1-based index pairs) and
per annotation ([x, y, v] * K, v: 0 not labelled, 1 labelled but hidden, 2 visible). A keypoint
head predicts one heatmap per keypoint for every class, so all categories of a dataset must list
the same keypoints; this module is where that is checked, once, for every format.

A mirror image turns a left wrist into a right one: the keypoints' order must be permuted
after any transform that mirrors the image. The permutation comes from `dataset.keypoint_flip_map`
(pairs of names) or, when that is null, from the names themselves: "left_eye" <-> "right_eye",
"left" <-> "right" (any name holding "left" whose "right" twin exists).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from detector.data.coco_index import DatasetError


@dataclass(frozen=True)
class KeypointSpec:
    """The keypoints every category of a dataset shares."""

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()   # 1-based pairs, as COCO writes them
    # The keypoint each one becomes in a mirror, when the data says so (YOLO pose's flip_idx).
    flip_idx: tuple[int, ...] | None = None

    @property
    def count(self) -> int:
        return len(self.names)


def keypoint_spec(categories: Sequence[dict], source: str) -> KeypointSpec | None:
    """The categories' shared KeypointSpec; None when no category lists keypoints. DatasetError
    naming `source` when they list different ones (one head predicts one list for every class)."""
    listed = {}
    for category in categories:
        names = category.get("keypoints")
        if names:
            skeleton = tuple(tuple(int(i) for i in pair) for pair in category.get("skeleton") or ())
            flip_idx = category.get("keypoint_flip_idx")
            listed[str(category.get("name", category["id"]))] = KeypointSpec(
                tuple(str(n) for n in names), skeleton, None if flip_idx is None else tuple(int(i) for i in flip_idx))
    if not listed:
        return None
    specs = set(spec.names for spec in listed.values())
    if len(specs) > 1 or len(listed) < len(categories):
        described = "; ".join(f"{name}: {list(spec.names)}" for name, spec in list(listed.items())[:4])
        without = [str(c.get("name", c["id"])) for c in categories if not c.get("keypoints")]
        raise DatasetError(
            f"{source}: the categories list different keypoints ({described}"
            f"{'; without keypoints: ' + str(without[:5]) if without else ''}); a keypoint model predicts one list "
            "for every class: give every category the same 'keypoints' names, or keep only the categories that "
            "have them with dataset.classes.")
    return next(iter(listed.values()))


def flip_permutation(names: Sequence[str], flip_map: Sequence[Sequence[str]] | None, source: str) -> np.ndarray:
    """int64 [K]: after a mirror, keypoint i of the new order is keypoint perm[i] of the old.

    flip_map: pairs of names that swap (dataset.keypoint_flip_map); None derives them from
    "left"/"right" in the names. A keypoint in no pair (a nose, a top) keeps its place."""
    names = [str(n) for n in names]
    position = {name: i for i, name in enumerate(names)}
    if flip_map is None:
        pairs = [(name, name.replace("left", "right")) for name in names
                 if "left" in name and name.replace("left", "right") in position]
    else:
        pairs = [tuple(str(v) for v in pair) for pair in flip_map]
        for pair in pairs:
            unknown = [v for v in pair if v not in position]
            if len(pair) != 2 or unknown:
                raise DatasetError(f"{source}: dataset.keypoint_flip_map entry {list(pair)} must be two of the "
                                   f"dataset's keypoint names {names}" + (f" ({unknown} are not)" if unknown else ""))
    permutation = np.arange(len(names), dtype=np.int64)
    for a, b in pairs:
        permutation[position[a]], permutation[position[b]] = position[b], position[a]
    return permutation


def keypoints_array(keypoints: Sequence | None, count: int, num_keypoints: int) -> np.ndarray:
    """float32 [count, K, 3] from a record's per-box keypoint lists (None entries: not labelled,
    all v=0). ValueError naming the length when a list is not 3 * K numbers."""
    array = np.zeros((count, num_keypoints, 3), dtype=np.float32)
    if keypoints is None:
        return array
    for i, values in enumerate(keypoints):
        if values is None:
            continue
        if len(values) != 3 * num_keypoints:
            raise ValueError(f"box {i} has {len(values)} keypoint numbers; the dataset's categories have "
                             f"{num_keypoints} keypoints (3 x {num_keypoints} numbers [x, y, v] expected)")
        array[i] = np.asarray(values, dtype=np.float32).reshape(num_keypoints, 3)
    # A keypoint not labelled has no position: its x, y are meaningless (often 0, 0).
    array[array[:, :, 2] <= 0] = 0
    return array


def dataset_keypoint_spec(cfg) -> KeypointSpec | None:
    """The KeypointSpec of cfg.dataset's training split (None: no keypoints), without building a dataset."""
    from detector.data.formats import build_format

    index = build_format(cfg).index("train")
    return keypoint_spec(index.gt_dict.get("categories", []), f"dataset={cfg.dataset.name}")


def require_keypoints(cfg) -> KeypointSpec:
    """DatasetError naming the model and the dataset unless cfg.dataset has keypoints (one
    list shared by its categories, and annotations that label them). Called before training
    a keypoint model, as require_masks is for a mask model."""
    spec = dataset_keypoint_spec(cfg)
    model = cfg.model.name if "model" in cfg and "name" in cfg.model else "<a keypoint model>"
    if spec is None:
        raise DatasetError(
            f"model={model} needs keypoints but dataset={cfg.dataset.name} has none (its categories list no "
            "'keypoints' names); use a box model (model=faster_rcnn_fpn) or a dataset with COCO keypoints, "
            "e.g. dataset=shapes, a COCO person-keypoints file, or YOLO pose labels (kpt_shape in data.yaml).")
    expected = cfg.model.roi_heads.keypoint_head.num_keypoints
    if expected is not None and int(expected) != spec.count:
        raise DatasetError(f"model.roi_heads.keypoint_head.num_keypoints={expected} but dataset={cfg.dataset.name} "
                           f"has {spec.count} keypoints {list(spec.names)}; leave it null to take the dataset's.")
    sigmas = cfg.dataset.keypoint_sigmas
    if sigmas is not None and len(sigmas) != spec.count:
        raise DatasetError(f"dataset.keypoint_sigmas has {len(sigmas)} values for {spec.count} keypoints "
                           f"{list(spec.names)}; give one OKS sigma per keypoint.")
    if sigmas is None and spec.count != 17:
        raise DatasetError(f"dataset={cfg.dataset.name} has {spec.count} keypoints {list(spec.names)}, not COCO "
                           "person's 17: set dataset.keypoint_sigmas (one OKS sigma per keypoint, e.g. 0.05 each) "
                           "for their evaluation.")
    flip_map = cfg.dataset.keypoint_flip_map
    flip_permutation(spec.names, None if flip_map is None else [list(pair) for pair in flip_map],
                     f"dataset={cfg.dataset.name}")
    return spec


def compact_keypoint_records(records: list, num_keypoints: int) -> tuple[list, list]:
    """Records whose keypoints are float32 [M, K, 3] arrays (zeros, v=0, for boxes without
    any), and the problems: a box whose keypoints are not 3 * K numbers makes its image a bad
    sample (its keypoints cannot be read, and training it as unlabelled would be wrong)."""
    import dataclasses

    from detector.data.coco_index import BAD_IMAGE, Problem

    compacted, problems = [], []
    for record in records:
        if record.problem is not None:
            compacted.append(dataclasses.replace(record, keypoints=None))
            continue
        try:
            array = keypoints_array(record.keypoints, len(record.boxes), num_keypoints)
        except (ValueError, TypeError) as error:
            reason = f"keypoints: {error}"
            problems.append(Problem(record.path, reason, "bad_keypoints", BAD_IMAGE))
            compacted.append(dataclasses.replace(record, keypoints=None, problem=reason))
            continue
        compacted.append(dataclasses.replace(record, keypoints=array))
    return compacted, problems


def dataset_flip_permutation(fmt, spec: KeypointSpec) -> np.ndarray:
    """The flip permutation of a dataset format's keypoints: its keypoint_flip_map, else the
    data's own (YOLO pose's flip_idx), else derived from left/right in the names."""
    if fmt.keypoint_flip_map is None and spec.flip_idx is not None:
        return np.asarray(spec.flip_idx, dtype=np.int64)
    return flip_permutation(spec.names, fmt.keypoint_flip_map, f"dataset={fmt.name}")
