"""What COCO evaluation accepts: ground truth and results checked before either backend sees them.

Both backends fail late and cryptically on a wrong key, an unknown image or category, or a mask
of the wrong size (or quietly measure the wrong thing: a "bbox" beside a "segmentation").
Checking first, in one place, gives one error naming the record and the fix, whichever backend
runs, and lets the error analysis (detector.evaluation.analysis) check its inputs the same way.
"""
from __future__ import annotations


class EvaluationError(ValueError):
    """Ground truth or results that cannot be evaluated."""


# What a detection is compared by: its box, or its mask (an RLE "segmentation"). The error
# analysis (detector.evaluation.analysis) compares regions, so it takes these two.
IOU_TYPES = ("bbox", "segm")
# What the COCO evaluation also takes: keypoints, compared by COCO's object keypoint similarity (OKS).
EVALUATION_IOU_TYPES = IOU_TYPES + ("keypoints",)
# The keys each kind of result needs; the others are dropped from the copies the backends get
# (a "bbox" next to a "segmentation" would make pycocotools measure the mask's size by its box).
RESULT_KEYS = {
    "bbox": ("image_id", "category_id", "bbox", "score"),
    "segm": ("image_id", "category_id", "segmentation", "score"),
    "keypoints": ("image_id", "category_id", "keypoints", "score"),
}
# Keys kept when a result has them. A keypoint result's box is kept, as Detectron2's evaluation
# keeps it: both libraries then size the detection by its box (the area ranges of APm/APl)
# instead of by the box around its keypoints.
OPTIONAL_RESULT_KEYS = {"bbox": (), "segm": (), "keypoints": ("bbox",)}


def check_iou_type(iou_type: str, allowed: tuple[str, ...] = EVALUATION_IOU_TYPES) -> str:
    if iou_type not in allowed:
        raise EvaluationError(f"Unknown IoU type '{iou_type}'; choose from {allowed}.")
    return iou_type


def check_results(results: list[dict], gt: dict, iou_type: str = "bbox") -> None:
    check_iou_type(iou_type)
    images = {image["id"]: image for image in gt.get("images", [])}
    category_ids = {category["id"] for category in gt.get("categories", [])}
    keypoint_counts = {category["id"]: len(category.get("keypoints") or ()) for category in gt.get("categories", [])}
    for index, det in enumerate(results):
        missing = [key for key in RESULT_KEYS[iou_type] if key not in det]
        if missing:
            if iou_type == "bbox":
                hint = " (it has a segmentation: evaluate masks with iou type segm)" if "segmentation" in det else ""
                raise EvaluationError(f"Result #{index} lacks the key(s) {missing}; COCO box results need image_id, category_id, bbox [x, y, w, h], score{hint}.")
            if iou_type == "keypoints":
                raise EvaluationError(f"Result #{index} lacks the key(s) {missing}; COCO keypoint results need image_id, "
                                      "category_id, keypoints [x1, y1, v1, x2, ...] (3 numbers per keypoint), score.")
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
        if iou_type == "keypoints":
            _check_result_keypoints(index, det, keypoint_counts)


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


def _check_result_keypoints(index: int, det: dict, keypoint_counts: dict) -> None:
    keypoints = det["keypoints"]
    expected = keypoint_counts[det["category_id"]]
    if not isinstance(keypoints, (list, tuple)) or len(keypoints) != 3 * expected:
        length = len(keypoints) if isinstance(keypoints, (list, tuple)) else type(keypoints).__name__
        raise EvaluationError(f"Result #{index} has keypoints of length {length}; its category {det['category_id']} "
                              f"has {expected} keypoints in the ground truth, so 3 x {expected} = {3 * expected} "
                              "numbers [x, y, v, ...] are expected.")


def check_gt_keypoints(gt: dict, sigmas) -> None:
    """keypoints evaluation compares each annotation's [x, y, v] triplets by OKS with one sigma per
    keypoint: every annotation needs them, "num_keypoints" (the labelled ones; 0 is ignored, as
    COCO ignores it) and an "area", and the sigmas must be one per keypoint of every category."""
    counts = {len(category.get("keypoints") or ()) for category in gt.get("categories", [])}
    if counts == {0} or not counts:
        raise EvaluationError("The ground truth's categories list no keypoints (category['keypoints'] names); "
                              "keypoints evaluation needs keypoint annotations (use --iou-type bbox for box-only data).")
    if len(counts) > 1:
        raise EvaluationError(f"The ground truth's categories have different numbers of keypoints {sorted(counts)}; "
                              "COCO's keypoint evaluation takes one keypoint list (one sigma each) for all categories.")
    count = counts.pop()
    if sigmas is not None and len(sigmas) != count:
        raise EvaluationError(f"{len(sigmas)} keypoint sigmas for {count} keypoints per object; give one sigma per "
                              "keypoint (dataset.keypoint_sigmas, or --keypoint-sigmas).")
    for ann in gt.get("annotations", []):
        for key in ("keypoints", "num_keypoints", "area"):
            if key not in ann:
                raise EvaluationError(f"Ground-truth annotation id {ann.get('id')} has no '{key}'; keypoints evaluation "
                                      "needs keypoints [x, y, v] * K, num_keypoints and area on every annotation.")
        if len(ann["keypoints"]) != 3 * count:
            raise EvaluationError(f"Ground-truth annotation id {ann.get('id')} has {len(ann['keypoints'])} keypoint "
                                  f"numbers; its categories have {count} keypoints (3 x {count} numbers expected).")


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
