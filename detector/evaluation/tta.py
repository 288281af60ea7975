"""Test-time augmentation: a detector run on flipped and rescaled copies of each image,
the detections mapped back to the input image and merged.

`TestTimeAugmentation(model, ...)` wraps any detector with torchvision's eval calling
convention and keeps it: `tta([img, ...]) -> [{"boxes", "scores", "labels"}, ...]`, boxes in
input-image pixels. Views: every scale in `scales`, each also mirrored when `flip`.

Scales are multiples of the model's own test resize (model.input.min_size_test and
max_size_test): 1.0 is the plain test size. Running at another scale sets this project's
`model.preprocessor.min_size_test / max_size_test` for the duration of the call, so any
other model works with scales [1.0] (flip only).

Merging (`merge`), then the top `detections_per_img` kept:
  "wbf" - weighted box fusion (the default): per class, boxes that overlap a cluster's
          fused box by more than `wbf_iou_thresh` join it; the fused box is the
          score-weighted mean of its members and its score their summed score divided by
          the number of views (a box found in one view of six keeps a sixth of its score).
  "nms" - all views' detections concatenated, then per-class NMS at the model's own
          nms_thresh: the same post-processing a single pass uses.
Measured on bccd (ResNet-18 narrow, 72 test images, scales 0.875/1/1.125 with flips):
AP 0.608 without TTA, 0.623 with "wbf", 0.607 with "nms" -- NMS keeps one of the
views' boxes, each as noisy as a single pass, while fusion averages their errors.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn
from torchvision.ops import box_iou

from detector.modeling.boxes import batched_nms, clip_to_image, hflip_boxes
from detector.modeling.postprocess_keys import postprocess_module

MERGE_METHODS = ("nms", "wbf")


@contextlib.contextmanager
def scaled_test_size(model: nn.Module, scale: float) -> Iterator[None]:
    """The model's eval-time resize multiplied by `scale` while inside the block."""
    if scale == 1.0:
        yield
        return
    pre = getattr(model, "preprocessor", None)
    if pre is None or not hasattr(pre, "min_size_test") or not hasattr(pre, "max_size_test"):
        raise ValueError(f"test-time augmentation at scale {scale} needs a model whose .preprocessor has "
                         f"min_size_test/max_size_test (this project's FasterRCNN); {type(model).__name__} has "
                         "none: use test.aug_scales=[1.0] (flip only).")
    saved = pre.min_size_test, pre.max_size_test
    pre.min_size_test = max(1, int(round(saved[0] * scale)))
    pre.max_size_test = max(1, int(round(saved[1] * scale)))
    try:
        yield
    finally:
        pre.min_size_test, pre.max_size_test = saved


def weighted_box_fusion(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, num_views: int,
                        iou_thresh: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused (boxes, scores, labels); see the module docstring."""
    out_boxes, out_scores, out_labels = [], [], []
    for label in labels.unique():
        mask = labels == label
        cls_boxes, cls_scores = boxes[mask], scores[mask]
        order = cls_scores.argsort(descending=True)
        cls_boxes, cls_scores = cls_boxes[order], cls_scores[order]
        fused: list[torch.Tensor] = []       # current fused box of each cluster
        weighted: list[torch.Tensor] = []    # sum of score * box
        total: list[torch.Tensor] = []       # sum of scores
        for box, score in zip(cls_boxes, cls_scores):
            if fused:
                ious = box_iou(box[None], torch.stack(fused))[0]
                best = int(ious.argmax())
                if float(ious[best]) > iou_thresh:
                    weighted[best] = weighted[best] + score * box
                    total[best] = total[best] + score
                    fused[best] = weighted[best] / total[best]
                    continue
            fused.append(box.clone())
            weighted.append(score * box)
            total.append(score.clone())
        out_boxes.append(torch.stack(fused))
        out_scores.append(torch.stack(total) / num_views)
        out_labels.append(label.repeat(len(fused)))
    if not out_boxes:
        return boxes, scores, labels
    return torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_labels)


class TestTimeAugmentation(nn.Module):
    """A detector evaluated on several views of each image; see the module docstring."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, model: nn.Module, scales: Sequence[float] = (1.0,), flip: bool = True, nms_thresh: float = 0.5,
                 detections_per_img: int = 100, merge: str = "wbf", wbf_iou_thresh: float = 0.55):
        super().__init__()
        scales = [float(s) for s in scales]
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"test.aug_scales={scales}: give one or more positive multiples of the test size, e.g. [1.0].")
        if merge not in MERGE_METHODS:
            raise ValueError(f"test.aug_merge={merge!r}; valid choices: {', '.join(MERGE_METHODS)}.")
        if not scales[1:] and not flip:
            raise ValueError("test.aug=true with one scale and test.aug_flip=false is a single plain pass; "
                             "give several test.aug_scales or set test.aug_flip=true.")
        self.model = model
        self.scales = scales
        self.flip = bool(flip)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.merge = merge
        self.wbf_iou_thresh = float(wbf_iou_thresh)
        self.train(model.training)  # wrapping an eval-mode model gives an eval-mode wrapper

    @property
    def num_views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def forward(self, images: Sequence[torch.Tensor], targets=None):
        if self.training or targets is not None:
            raise RuntimeError("TestTimeAugmentation is for inference: call .eval() and pass images only.")
        per_image: list[list[dict]] = [[] for _ in images]
        for scale in self.scales:
            with scaled_test_size(self.model, scale):
                for result, views in zip(self.model(list(images)), per_image):
                    views.append(result)
                if self.flip:
                    mirrored = self.model([image.flip(-1) for image in images])
                    for image, result, views in zip(images, mirrored, per_image):
                        views.append({**result, "boxes": hflip_boxes(result["boxes"], int(image.shape[-1]))})
        return [self._merge(views, tuple(image.shape[-2:])) for image, views in zip(images, per_image)]

    def _merge(self, views: list[dict], image_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        # float32: under autocast the views may come back in reduced precision, and
        # averaging or NMS in bf16 would move boxes by whole pixels.
        boxes = torch.cat([v["boxes"].float() for v in views])
        scores = torch.cat([v["scores"].float() for v in views])
        labels = torch.cat([v["labels"] for v in views])
        if self.merge == "wbf":
            boxes, scores, labels = weighted_box_fusion(boxes, scores, labels, self.num_views, self.wbf_iou_thresh)
            keep = scores.argsort(descending=True)
        else:
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)  # sorted by decreasing score
        keep = keep[: self.detections_per_img]
        boxes = boxes[keep]
        if image_size is not None:
            # A weighted mean of boxes inside the image can pass its border by a rounding error.
            boxes = clip_to_image(boxes, image_size)
        return {"boxes": boxes, "scores": scores[keep], "labels": labels[keep]}


# The test node's keys a TestTimeAugmentation is made from (conf/config.yaml's test.aug_*).
SETTING_KEYS = ("aug_scales", "aug_flip", "aug_merge", "aug_wbf_iou_thresh")


def tta_from_settings(test, model: nn.Module) -> TestTimeAugmentation:
    """`model` wrapped for the test-time augmentation a config's `test` node describes
    (aug_scales, aug_flip, aug_merge, aug_wbf_iou_thresh), whatever its test.aug says. The
    merge uses the model's own post-processing (its RoI heads' NMS threshold and detections per
    image), whatever config the model was built from."""
    roi = postprocess_module(model)   # the RoI heads (R-CNN) or the model itself (one-stage)
    return TestTimeAugmentation(
        model, scales=list(test.aug_scales), flip=bool(test.aug_flip), nms_thresh=float(roi.nms_thresh),
        detections_per_img=int(roi.detections_per_img), merge=str(test.aug_merge),
        wbf_iou_thresh=float(test.aug_wbf_iou_thresh),
    )


def build_tta(cfg, model: nn.Module) -> nn.Module:
    """`model` wrapped for test-time augmentation when cfg.test.aug is true (with cfg's
    test.aug_* settings: tta_from_settings), else `model`."""
    if not bool(cfg.test.aug):
        return model
    return tta_from_settings(cfg.test, model)


def checkpoint_tta(model: nn.Module, source: str) -> TestTimeAugmentation:
    """`model`, loaded from the checkpoint `source` (detector.weights.loading, which keeps the
    checkpoint's stored config as model.config), wrapped with the test.aug_* settings that
    config records -- the ones its run evaluated with -- never conf/'s."""
    from omegaconf import OmegaConf

    config = getattr(model, "config", None)
    missing = [key for key in SETTING_KEYS if config is None or OmegaConf.select(config, f"test.{key}") is None]
    if missing:
        raise ValueError(f"--tta: the config stored in {source} has no test.{missing[0]}, so its test-time augmentation "
                         "settings are unknown (a checkpoint written before they existed); evaluate it with "
                         "tools/train_net.py eval_only=true test.aug=true, which takes them from the command line.")
    return tta_from_settings(config.test, model)
