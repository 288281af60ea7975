"""Model outputs -> COCO results format, in the dataset's own category ids."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch


def detections_to_coco_results(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_category_id: Mapping[int, int],
) -> list[dict]:
    """One {"image_id", "category_id", "bbox": [x, y, w, h], "score"} per detection.

    `outputs[i]` holds "boxes" (xyxy pixels), "scores" and "labels" (1..K) for the image
    `image_ids[i]`; labels are mapped back to the dataset's category ids, which for COCO
    are not contiguous.
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
        for box, score, label in zip(xywh, scores, labels):
            if label not in label_to_category_id:
                raise KeyError(f"Model predicted label {label}, which the dataset's label_to_category_id does not map.")
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(label_to_category_id[label]),
                    "bbox": [round(v, 4) for v in box],
                    "score": round(float(score), 6),
                }
            )
    return results
