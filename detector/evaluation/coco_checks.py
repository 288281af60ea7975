"""What COCO evaluation accepts: ground truth and results checked before either backend sees them.

Both backends fail late and cryptically on a wrong key, an unknown image or category, or a mask
of the wrong size (or quietly measure the wrong thing: a "bbox" beside a "segmentation").
Checking first, in one place, gives one error naming the record and the fix, whichever backend
runs, and lets the error analysis (detector.evaluation.analysis) check its inputs the same way.
"""
from __future__ import annotations


class EvaluationError(ValueError):
    """Ground truth or results that cannot be evaluated."""


# What a detection is compared by: its box, or its mask (an RLE "segmentation").
IOU_TYPES = ("bbox", "segm")
# The keys each kind of result needs; the others are dropped from the copies the backends get
# (a "bbox" next to a "segmentation" would make pycocotools measure the mask's size by its box).
RESULT_KEYS = {
    "bbox": ("image_id", "category_id", "bbox", "score"),
    "segm": ("image_id", "category_id", "segmentation", "score"),
}


def check_iou_type(iou_type: str) -> str:
    if iou_type not in IOU_TYPES:
        raise EvaluationError(f"Unknown IoU type '{iou_type}'; choose from {IOU_TYPES}.")
    return iou_type


def check_results(results: list[dict], gt: dict, iou_type: str = "bbox") -> None:
    check_iou_type(iou_type)
    images = {image["id"]: image for image in gt.get("images", [])}
    category_ids = {category["id"] for category in gt.get("categories", [])}
    for index, det in enumerate(results):
        missing = [key for key in RESULT_KEYS[iou_type] if key not in det]
        if missing:
            if iou_type == "bbox":
                hint = " (it has a segmentation: evaluate masks with iou type segm)" if "segmentation" in det else ""
                raise EvaluationError(f"Result #{index} lacks the key(s) {missing}; COCO box results need image_id, category_id, bbox [x, y, w, h], score{hint}.")
            raise EvaluationError(f"Result #{index} lacks the key(s) {missing}; COCO segm results need image_id, category_id, "
                                  "segmentation (an RLE {size: [h, w], counts}), score.")
        if det["image_id"] not in images:
            raise EvaluationError(f"Result #{index} has image_id {det['image_id']}, which is not in the ground truth.")
        if det["category_id"] not in category_ids:
            raise EvaluationError(
                f"Result #{index} has category_id {det['category_id']}, which is not a ground-truth category "
                f"(valid: {sorted(category_ids)[:20]}{' ...' if len(category_ids) > 20 else ''})."
            )
        if iou_type == "segm":
            _check_result_mask(index, det, images[det["image_id"]])


def _check_result_mask(index: int, det: dict, image: dict) -> None:
    segmentation = det["segmentation"]
    # Both backends take the area and the box of a result from its RLE: polygons are not accepted there.
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise EvaluationError(f"Result #{index} has a segmentation of type {type(segmentation).__name__}; "
                              "segm results need an RLE {size: [height, width], counts} "
                              "(detector.data.masks.mask_to_rle makes one from a binary mask).")
    size = list(segmentation["size"]) if isinstance(segmentation["size"], (list, tuple)) else segmentation["size"]
    expected = [image.get("height"), image.get("width")]
    if None not in expected and size != expected:
        raise EvaluationError(f"Result #{index} has an RLE of size {size} (height, width) on image {det['image_id']}, "
                              f"which is {expected[0]}x{expected[1]}; masks must cover the whole image.")


def check_gt_masks(gt: dict) -> None:
    """segm evaluation rasterises every ground-truth object: each needs a segmentation and its
    image a height and width."""
    from detector.data.masks import MaskFormatError, check_segmentation

    images = {image["id"]: image for image in gt.get("images", [])}
    for image in images.values():
        if "height" not in image or "width" not in image:
            raise EvaluationError(f"Ground-truth image id {image['id']} has no height/width; segm evaluation needs both.")
    for ann in gt.get("annotations", []):
        if "segmentation" not in ann:
            raise EvaluationError(f"Ground-truth annotation id {ann.get('id')} has no segmentation; segm evaluation "
                                  "needs polygons or RLE for every object (use --iou-type bbox for box-only data).")
        image = images.get(ann.get("image_id"), {})
        try:
            check_segmentation(ann["segmentation"], image.get("height"), image.get("width"), ann.get("id"))
        except MaskFormatError as error:
            raise EvaluationError(f"Ground truth: {error}") from None
