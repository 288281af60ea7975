"""Model outputs -> COCO results format, in the dataset's own category ids."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

# A mask model's per-pixel probabilities become the binary mask at this threshold (Mask R-CNN's 0.5).
MASK_THRESHOLD = 0.5


def _binary_masks(masks: torch.Tensor, count: int, threshold: float):
    """[N, 1, H, W] or [N, H, W] probabilities (or bools) -> numpy bool [N, H, W]."""
    masks = masks.detach().cpu()
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[0] != count:
        raise ValueError(f"Output masks have shape {tuple(masks.shape)}; expected [{count}, 1, H, W] or "
                         f"[{count}, H, W], one per box, pasted into the whole image.")
    if masks.dtype != torch.bool:
        masks = masks.float() > threshold
    return masks.numpy()


def detections_to_coco_results(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_category_id: Mapping[int, int],
    mask_threshold: float = MASK_THRESHOLD,
) -> list[dict]:
    """One {"image_id", "category_id", "bbox": [x, y, w, h], "score"} per detection.

    `outputs[i]` holds "boxes" (xyxy pixels), "scores" and "labels" (1..K) for the image
    `image_ids[i]`; labels are mapped back to the dataset's category ids, which for COCO
    are not contiguous. When an output also holds "masks" (a mask model: [N, 1, H, W]
    probabilities over the whole image), each result gets a "segmentation": the mask
    thresholded at `mask_threshold`, as a compressed RLE with str counts (JSON-ready).
    When it holds "keypoints" (a keypoint model: [N, K, 3] (x, y, 1) in the image's pixels),
    each result gets COCO's "keypoints" [x1, y1, v1, ...] and "keypoint_scores" [K].
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs for {len(image_ids)} image ids.")
    results = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores = output["scores"].detach().float().cpu().tolist()
        labels = output["labels"].detach().cpu().tolist()
        keypoints = keypoint_scores = None
        if "keypoints" in output:
            keypoints = output["keypoints"].detach().float().cpu().reshape(len(xywh), -1).tolist()
            keypoint_scores = output["keypoints_scores"].detach().float().cpu().tolist()
        rles = None
        if "masks" in output:
            from detector.data.masks import masks_to_rles

            rles = masks_to_rles(_binary_masks(output["masks"], len(xywh), mask_threshold))
        for index, (box, score, label) in enumerate(zip(xywh, scores, labels)):
            if label not in label_to_category_id:
                raise KeyError(f"Model predicted label {label}, which the dataset's label_to_category_id does not map.")
            result = {
                "image_id": int(image_id),
                "category_id": int(label_to_category_id[label]),
                "bbox": [round(v, 4) for v in box],
                "score": round(float(score), 6),
            }
            if rles is not None:
                result["segmentation"] = rles[index]
            if keypoints is not None:
                result["keypoints"] = [round(v, 4) for v in keypoints[index]]
                result["keypoint_scores"] = [round(v, 6) for v in keypoint_scores[index]]
            results.append(result)
    return results
