"""The dataset doctor's findings: every problem of a split, plus its class and size histograms.

Annotation problems come from coco_index (the same rules training uses); image problems
come from decoding every image, as training would; segmentation problems from the checks a
mask model's training applies (detector.data.masks).
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from detector.data.coco_index import BAD_IMAGE, DatasetIndex, Problem
from detector.data.image_io import BadImageError, read_image_rgb
from detector.utils.progress import track

# COCO's area ranges (pixels squared) for APs / APm / APl.
SMALL_AREA = 32 ** 2
LARGE_AREA = 96 ** 2


@dataclass
class SplitReport:
    name: str
    num_images: int = 0
    num_boxes: int = 0
    num_crowd: int = 0
    # Boxes with / without a segmentation (polygons or RLE), counted when any box has one.
    boxes_with_mask: int = 0
    boxes_without_mask: int = 0
    errors: list[Problem] = field(default_factory=list)
    empty_images: list[str] = field(default_factory=list)
    class_histogram: dict[str, int] = field(default_factory=dict)
    size_histogram: dict[str, int] = field(default_factory=dict)


def report_split(name: str, index: DatasetIndex, max_image_pixels: int, decode_images: bool = True,
                 workers: int = 4) -> SplitReport:
    report = SplitReport(name, num_images=len(index.records), num_crowd=index.num_crowd)
    report.errors.extend(index.problems)
    if decode_images:
        def check(record):
            try:
                read_image_rgb(record.path, (record.width, record.height) if record.width else None, max_image_pixels)
            except BadImageError as error:
                return Problem(error.path, error.reason, "bad_image_file", "bad_image")
            return None

        with ThreadPoolExecutor(max(1, workers)) as pool:  # decoding releases the GIL
            decoded = track(pool.map(check, index.records), total=len(index.records), desc=f"decoding {name}",
                            unit="images")
            report.errors.extend(p for p in decoded if p is not None)
    if index.has_masks:
        _check_segmentations(index, report)
    labels = Counter()
    for record in index.records:
        labels.update(int(label) for label in record.labels)
        if len(record.labels) == 0 and record.problem is None:
            report.empty_images.append(record.path)
    report.num_boxes = sum(labels.values())
    report.class_histogram = {name: labels.get(label, 0) for label, name in enumerate(index.class_names, start=1)}
    sizes = Counter()
    for ann in index.gt_dict["annotations"]:
        if not ann.get("iscrowd", 0):
            area = float(ann.get("area", ann["bbox"][2] * ann["bbox"][3]))
            sizes["small" if area < SMALL_AREA else "large" if area > LARGE_AREA else "medium"] += 1
    report.size_histogram = {k: sizes.get(k, 0) for k in ("small", "medium", "large")}
    return report


def _check_segmentations(index: DatasetIndex, report: SplitReport) -> None:
    """Counts the boxes with and without a segmentation, and names every malformed one (a mask
    model's training skips its image; evaluation cannot score it)."""
    from detector.data.masks import MaskFormatError, checked_polygons

    for record in index.records:
        if record.segmentations is None:
            report.boxes_without_mask += len(record.boxes)
            continue
        for segmentation, ann_id in zip(record.segmentations, record.annotation_ids):
            if segmentation is None:
                report.boxes_without_mask += 1
                continue
            report.boxes_with_mask += 1
            try:
                checked_polygons(segmentation, record.height or None, record.width or None, ann_id)
            except MaskFormatError as error:
                report.errors.append(Problem(record.path, str(error), "bad_segmentation", BAD_IMAGE))


def format_report(report: SplitReport, max_listed: int = 200) -> str:
    lines = [f"== {report.name}: {report.num_images} images, {report.num_boxes} boxes "
             f"(+{report.num_crowd} crowd/difficult regions, evaluation only)"]
    if report.errors:
        lines.append(f"-- {len(report.errors)} problem(s):")
        lines += [f"ERROR {p.file}: {p.reason}" for p in report.errors[:max_listed]]
        if len(report.errors) > max_listed:
            lines.append(f"... and {len(report.errors) - max_listed} more")
    else:
        lines.append("-- no problems found")
    if report.empty_images:
        shown = ", ".join(report.empty_images[:5]) + (" ..." if len(report.empty_images) > 5 else "")
        lines.append(f"-- {len(report.empty_images)} image(s) without boxes (kept for evaluation; "
                     f"dataset.filter_empty drops them from training): {shown}")
    if report.boxes_with_mask:
        missing = (f"; a mask model (model=mask_rcnn_fpn, ...) skips the images of the "
                   f"{report.boxes_without_mask} without one" if report.boxes_without_mask else "")
        lines.append(f"-- instance masks: {report.boxes_with_mask} of "
                     f"{report.boxes_with_mask + report.boxes_without_mask} boxes have a segmentation{missing}")
    lines.append("-- boxes per class:")
    width = max((len(n) for n in report.class_histogram), default=0)
    lines += [f"   {name:<{width}} {count}" for name, count in report.class_histogram.items()]
    lines.append("-- boxes per COCO size (area < 32^2 small, > 96^2 large): "
                 + ", ".join(f"{k} {v}" for k, v in report.size_histogram.items()))
    return "\n".join(lines)
