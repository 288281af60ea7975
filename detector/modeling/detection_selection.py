"""From scored, class-specific boxes to each image's final detections (thresholds, per-class NMS,
top k).

A plain operation with no module state, kept in a leaf: the plain and the cascade RoI heads
both end with it, and detector.export traces it as it is.
"""
from __future__ import annotations

from typing import Sequence

import torch

from detector.modeling.boxes import batched_nms, box_sizes_at_least, clip_boxes, size_tensor


@torch.no_grad()
def select_detections(boxes: torch.Tensor, scores: torch.Tensor, counts: Sequence[int],
                      image_sizes, score_thresh: float, nms_thresh: float,
                      detections_per_img: int, min_box_size: float) -> list[dict[str, torch.Tensor]]:
    """Detections of each image from per-class boxes [R, K+1, 4] and class probabilities [R, K+1]
    (background first) of all images' proposals (counts per image): clipped, background dropped,
    score and size thresholds, per-class NMS, the best `detections_per_img`. Shared by the
    plain and the cascade box heads. image_sizes: (height, width) per image, as pairs or an
    int tensor [N, 2]; everything after the image split is tensor operations, so the export
    traces this function as it is."""
    num_classes = scores.shape[1]
    sizes = size_tensor(image_sizes, boxes.device)
    # One image needs no split: a traced split would freeze its box count.
    per_image = zip([boxes], [scores]) if len(counts) == 1 else zip(boxes.split(counts), scores.split(counts))
    results = []
    for i, (image_boxes, image_scores) in enumerate(per_image):
        image_boxes = clip_boxes(image_boxes[None], sizes[i:i + 1])[0]
        labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(image_scores)
        # Drop the background column, then treat every (proposal, class) pair as a candidate.
        image_boxes = image_boxes[:, 1:].reshape(-1, 4)
        image_scores = image_scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)
        keep = torch.nonzero(image_scores > score_thresh, as_tuple=True)[0]
        image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
        keep = torch.nonzero(box_sizes_at_least(image_boxes, min_box_size), as_tuple=True)[0]
        image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
        keep = batched_nms(image_boxes, image_scores, labels, nms_thresh)[: detections_per_img]
        results.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": labels[keep]})
    return results
