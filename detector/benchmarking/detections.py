"""How closely two detectors' outputs on the same image agree."""
from __future__ import annotations

import torch
from torchvision.ops import box_iou


def match_pairs(expected: dict, actual: dict, min_iou: float = 0.99) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of same-label detections (IoU >= min_iou), in the score
    order of `actual`: (index in actual, index in expected) pairs."""
    exp_boxes, act_boxes = expected["boxes"].float().cpu(), actual["boxes"].float().cpu()
    iou = box_iou(act_boxes, exp_boxes) if len(act_boxes) and len(exp_boxes) else torch.zeros(len(act_boxes), len(exp_boxes))
    iou[actual["labels"].cpu()[:, None] != expected["labels"].cpu()[None, :]] = 0
    taken: set[int] = set()
    pairs = []
    for i in range(len(act_boxes)):
        for j in torch.argsort(iou[i], descending=True).tolist():
            if iou[i, j] < min_iou:
                break
            if j not in taken:
                taken.add(j)
                pairs.append((i, j))
                break
    return pairs


def agreement(expected: dict, actual: dict, min_iou: float = 0.99, head: int = 20) -> dict:
    """Matched pairs (match_pairs), the largest box and score differences over them, and how
    many of the `head` highest-scoring reference detections found their match (with random
    weights the low-scoring tail is full of near ties that float rounding reorders)."""
    exp_boxes, act_boxes = expected["boxes"].float().cpu(), actual["boxes"].float().cpu()
    pairs = match_pairs(expected, actual, min_iou)
    result = {"count_theirs": len(exp_boxes), "count_ours": len(act_boxes), "matched": len(pairs),
              f"top{head}_matched": sum(1 for _, j in pairs if j < head)}
    if pairs:
        mine = torch.tensor([p[0] for p in pairs])
        ref = torch.tensor([p[1] for p in pairs])
        result["max_box_diff_px"] = float((act_boxes[mine] - exp_boxes[ref]).abs().max())
        result["max_score_diff"] = float((actual["scores"].float().cpu()[mine]
                                          - expected["scores"].float().cpu()[ref]).abs().max())
        in_head = ref < head
        if in_head.any():
            result[f"top{head}_max_box_diff_px"] = float((act_boxes[mine[in_head]] - exp_boxes[ref[in_head]]).abs().max())
    return result
