"""From the `dataset`, `aug` and `dataloader` config nodes to datasets (the one config path).

`cfg.dataset` names its format class in `_target_` (detector/data/formats.py: COCO files,
Pascal VOC folders, the generated shapes, or a user's own); `cfg.aug.train` lists the
training transforms (detector/data/transforms.py).
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from detector.data.coco_format import clear_json_cache, load_json  # noqa: F401 - load_json: tools read COCO files
from detector.data.coco_index import (ANNOTATION_IGNORED, BAD_IMAGE, FATAL, DatasetError, DatasetIndex, ImageRecord,
                                      Problem)
from detector.data.formats import SPLITS, DatasetFormat, build_format, check_split

if TYPE_CHECKING:   # the dataset module (torch, albumentations) is imported when first built
    from detector.data.dataset import DetectionDataset

# Beyond this many, dataset problems are summarised in one line instead of one warning each.
MAX_WARNINGS = 20


def class_names(cfg: DictConfig) -> list[str]:
    """Class names in label order (label i <-> names[i - 1]) without building a dataset."""
    return build_format(cfg).class_names()


def build_index(cfg: DictConfig, split: str) -> DatasetIndex:
    """Checked records + evaluation GT for a split, whatever the format."""
    check_split(split)
    return build_format(cfg).index(split)


def dataset_has_masks(cfg: DictConfig) -> bool:
    """Whether cfg.dataset's training split has instance masks (COCO polygons or RLE) a mask
    model can train on. Quick for COCO files (no indexing); VOC never has them."""
    return build_format(cfg).has_masks()


def require_masks(cfg: DictConfig) -> None:
    """DatasetError naming the model and dataset options unless cfg.dataset has instance masks.
    Call it before training a model with a mask branch (model=mask_rcnn_fpn, cascade_mask_rcnn_fpn)."""
    if dataset_has_masks(cfg):
        return
    model = cfg.model.name if "model" in cfg and "name" in cfg.model else "<a mask model>"
    raise DatasetError(
        f"model={model} needs instance masks but dataset={cfg.dataset.name} has none (no annotation of its "
        "training split has a 'segmentation'); use a box model (model=faster_rcnn_fpn, or cascade_rcnn_fpn) "
        "or a dataset with COCO segmentations (polygons or RLE), e.g. dataset=shapes or dataset=coco128."
    )


def build_dataset(cfg: DictConfig, split: str, with_masks: bool = False, with_keypoints: bool = False) -> DetectionDataset:
    """The `split` ("train" | "test") dataset; training applies cfg.aug and dataset.filter_empty.

    with_masks: training targets also carry "masks" (uint8 [G, H, W], one per box) for a mask
    model; DatasetError (require_masks) when the dataset has none. An image with a box whose
    segmentation is missing or malformed is a bad sample (dataset.on_bad_sample). Test
    samples are the same either way (the evaluation GT always keeps the segmentations).

    with_keypoints: training targets also carry "keypoints" (float32 [G, K, 3], one set per box,
    moved with the augmentation, left and right swapped by a mirror; detector/data/keypoints.py).
    """
    from detector.data.dataset import DetectionDataset
    from detector.data.transforms import build_augmentation

    check_split(split)
    fmt = build_format(cfg)
    index = fmt.index(split)
    train = split == "train"
    records = index.records
    problems = index.problems
    if train and with_masks:
        if not index.has_masks:
            require_masks(cfg)
        records, mask_problems = compact_mask_records(records)
        problems = problems + mask_problems
        index = dataclasses.replace(index, problems=problems)
    elif train:
        # Box-only training: let go of the file's segmentations (for COCO 2017, gigabytes of
        # polygons that forked workers would otherwise copy as they touch them).
        for record in records:   # the index's own fresh records
            record.segmentations = record.annotation_ids = None
    keypoint_flip = None
    if train and with_keypoints:
        records, problems, keypoint_flip = _keypoint_records(cfg, fmt, index, records, problems)
        index = dataclasses.replace(index, problems=problems)
    elif train:
        for record in records:   # no keypoint head: the file's keypoints are let go of too
            record.keypoints = None
    _report_problems(index, fmt.on_bad_sample, f"{fmt.name} {split}", train)
    transform = None
    gt_dict = index.gt_dict
    if train:
        if fmt.filter_empty:
            # Images whose annotations are bad stay in, so that sampling them is reported.
            records = [r for r in records if len(r.boxes) or r.problem is not None]
        transform = build_augmentation(cfg.aug.train, with_keypoints=with_keypoints)
        # The training GT is rarely evaluated; rebuilding it on demand keeps the (for
        # COCO 2017, gigabyte-sized) annotation list out of memory and out of forked workers.
        gt_dict = functools.partial(_gt_dict, fmt, split)
    dataset = DetectionDataset(
        records, index.class_names, index.label_to_category_id, gt_dict, train=train, transform=transform,
        seed=int(cfg.seed), on_bad_sample=fmt.on_bad_sample, min_box_size=float(cfg.aug.min_box_size),
        max_image_pixels=fmt.max_image_pixels, problems=problems, with_masks=train and with_masks,
        keypoint_flip=keypoint_flip,
    )
    clear_json_cache()
    return dataset


def _keypoint_records(cfg: DictConfig, fmt: DatasetFormat, index: DatasetIndex, records, problems):
    """(records with [M, K, 3] keypoint arrays, problems, the flip permutation) for a keypoint
    model; DatasetError (require_keypoints) when the dataset has none."""
    from detector.data.keypoints import (compact_keypoint_records, dataset_flip_permutation, keypoint_spec,
                                         require_keypoints)

    spec = keypoint_spec(index.gt_dict.get("categories", []), f"dataset={fmt.name}")
    if spec is None:
        require_keypoints(cfg)
    records, keypoint_problems = compact_keypoint_records(records, spec.count)
    return records, problems + keypoint_problems, dataset_flip_permutation(fmt, spec)


def build_held_out_dataset(cfg: DictConfig, rank: int = 0, world_size: int = 1,
                           with_masks: bool = False, with_keypoints: bool = False) -> DetectionDataset:
    """This rank's share (every world_size-th image) of the held-out images the validation loss
    is computed on: the test split's first `test.val_loss_max_images` images that have boxes
    and no problem, as training samples (targets; masks with `with_masks`) but without random
    augmentation -- only the resize the model's eval mode applies (model.input.min_size_test /
    max_size_test) -- so the same images give the same numbers at every validation. Indexed by
    (index, position) like the training set."""
    from detector.data.dataset import DetectionDataset
    from detector.data.transforms import ShortestEdgeResize, detection_compose

    fmt = build_format(cfg)
    index = fmt.index("test")
    records = index.records
    if with_masks:  # a mask model's losses need each box's mask; images without usable ones are left out
        records, _ = compact_mask_records(records)
    keypoint_flip = None
    if with_keypoints:  # likewise a keypoint model's need each box's keypoints
        records, _, keypoint_flip = _keypoint_records(cfg, fmt, index, records, [])
    records = [r for r in records if r.problem is None and len(r.boxes)]
    max_images = cfg.test.val_loss_max_images
    if max_images is not None:
        records = records[: int(max_images)]
    if not records:
        raise DatasetError(f"train.val_loss_period={cfg.train.val_loss_period}: the {fmt.name} test split has no "
                           "images with boxes to compute a validation loss on; set train.val_loss_period=0.")
    size = cfg.model.input
    # Not the training pipeline (cfg.aug.train): only the deterministic resize to the test size.
    transform = detection_compose([ShortestEdgeResize([int(size.min_size_test)], int(size.max_size_test))],
                                  with_keypoints=with_keypoints)
    return DetectionDataset(
        records[rank::world_size], index.class_names, index.label_to_category_id, {}, train=True,
        transform=transform, seed=int(cfg.seed), on_bad_sample="skip", min_box_size=float(cfg.aug.min_box_size),
        max_image_pixels=fmt.max_image_pixels, with_masks=with_masks, keypoint_flip=keypoint_flip,
    )


def compact_mask_records(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[Problem]]:
    """Records whose segmentations are checked and packed (masks.PackedSegmentations), and the
    problems: a box without a usable segmentation makes its image a bad sample (training its
    box without a mask, or with an empty one, would teach the mask head that it is background)."""
    from detector.data.masks import MaskFormatError, pack_segmentations

    compacted, problems = [], []
    for record in records:
        if record.problem is not None or not len(record.boxes):
            compacted.append(dataclasses.replace(record, segmentations=None))
            continue
        segmentations = record.segmentations or [None] * len(record.boxes)
        try:
            packed = pack_segmentations(segmentations, record.height, record.width, record.annotation_ids)
        except MaskFormatError as error:
            reason = str(error)
            kind = "missing_segmentation" if "has no segmentation" in reason else "bad_segmentation"
            problems.append(Problem(record.path, reason, kind, BAD_IMAGE))
            compacted.append(dataclasses.replace(record, segmentations=None, annotation_ids=None, problem=reason))
            continue
        compacted.append(dataclasses.replace(record, segmentations=packed, annotation_ids=None))
    return compacted, problems


def _gt_dict(fmt: DatasetFormat, split: str) -> dict:
    return fmt.index(split).gt_dict


def _report_problems(index: DatasetIndex, policy: str, what: str, train: bool) -> None:
    from detector.data.dataset import BadSampleError, BadSampleWarning

    fatal = [p for p in index.problems if p.effect == FATAL]
    if fatal:
        raise DatasetError(f"{what}: the annotations cannot be used:\n" + "\n".join(f"  {p}" for p in fatal[:MAX_WARNINGS]))
    # Under "error", an annotation that belongs to no image is refused too: the file is inconsistent.
    bad = [p for p in index.problems if p.effect in (BAD_IMAGE, ANNOTATION_IGNORED)]
    if bad and policy == "error":
        listed = "\n".join(f"  {p}" for p in bad[:MAX_WARNINGS])
        more = f"\n  ... and {len(bad) - MAX_WARNINGS} more" if len(bad) > MAX_WARNINGS else ""
        raise BadSampleError(f"{what}: {len(bad)} bad annotation(s) (dataset.on_bad_sample=error):\n{listed}{more}\n"
                             "Fix them, run tools/check_dataset.py for a full report, or set dataset.on_bad_sample=skip.")
    for problem in index.problems[:MAX_WARNINGS]:
        # Training skips such an image; evaluation keeps it, without the faulty annotation.
        consequence = "" if problem.effect != BAD_IMAGE else (
            "the image is skipped in training" if train else "the annotation is left out of evaluation")
        warnings.warn(f"{what}: {problem}" + (f"; {consequence}" if consequence else ""), BadSampleWarning, stacklevel=3)
    if len(index.problems) > MAX_WARNINGS:
        warnings.warn(f"{what}: {len(index.problems) - MAX_WARNINGS} more dataset problems not shown; "
                      "run tools/check_dataset.py for the full list", BadSampleWarning, stacklevel=3)
