"""One-stage (dense) detectors: backbone + FPN (P3..P7), one head predicting at every location of
every level, no proposals. RetinaNet (retinanet.py) and FCOS (fcos.py) subclass this with their
target assignment, losses, scores and box parameterisation.

Calling convention and outputs are FasterRCNN's (torchvision's): in train mode `model(images,
targets)` returns a dict of losses; in eval mode `model(images)` one dict {"boxes", "scores",
"labels"} per image (labels 1..K). `detect` and `postprocess` have FasterRCNN's signatures, so
detector.export traces these models the same way.

Post-processing, as both references do it: per level, the scores above `score_thresh`, then the
best `topk_candidates` of them, decoded; then one class-wise NMS over all levels and the best
`detections_per_img` (detector/modeling/postprocess_keys.py names these keys for every model).
torchvision clips the boxes to the image before that NMS; Detectron2 runs it on the unclipped
boxes and clips them to the input image afterwards, dropping those left empty
(`clip_before_nms` false, which its converted weights set).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from detector.modeling.boxes import batched_nms, boxes_to_original, clip_boxes, clip_to_image, size_tensor
from detector.modeling.preprocessing import ImagePreprocessor, detector_call


class DenseDetector(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, anchor_generator: nn.Module,
                 preprocessor: ImagePreprocessor, num_classes: int, score_thresh: float, nms_thresh: float,
                 detections_per_img: int, topk_candidates: int, clip_before_nms: bool = True,
                 channels_last: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.anchor_generator = anchor_generator
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.clip_before_nms = clip_before_nms
        self.channels_last = channels_last   # NHWC activations, as FasterRCNN

    # --- the calling convention ------------------------------------------------------------
    def forward(self, images: Sequence[torch.Tensor], targets: Sequence[dict] | None = None):
        return detector_call(self, images, targets)

    def detect(self, pixels: torch.Tensor, image_sizes, padded_size, targets: Sequence[dict] | None = None):
        """(detections per image in the resized images' pixels, losses) of a preprocessed batch;
        sizes may be int tensors (the traced export), as in FasterRCNN.detect."""
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        features = list(self.backbone(pixels).values())
        outputs = self.head(features)
        # float32 anchors even under autocast: half precision cannot hold large pixel coordinates.
        anchors = self.anchor_generator([f.shape[-2:] for f in features], padded_size, dtype=torch.float32,
                                        device=features[0].device)
        if self.training:
            if targets is None:
                raise ValueError("a one-stage detector needs targets in training mode.")
            return [], self.losses(outputs, anchors, targets)
        return self.select_detections(outputs, anchors, image_sizes), {}

    def postprocess(self, detections: list[dict], image_sizes, original_sizes) -> list[dict]:
        """Boxes from the resized images' pixels to the input images' (as FasterRCNN.postprocess);
        without clip_before_nms, then clipped to the input image, empty ones dropped (Detectron2)."""
        for result, resized, original in zip(detections, image_sizes, original_sizes):
            result["boxes"] = boxes_to_original(result["boxes"], resized, original)
            if not self.clip_before_nms:
                boxes = clip_to_image(result["boxes"], original)
                keep = torch.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]), as_tuple=True)[0]
                result.update(boxes=boxes[keep], scores=result["scores"][keep], labels=result["labels"][keep])
        return detections

    # --- what a subclass says -------------------------------------------------------------
    def losses(self, outputs: dict, anchors: list[torch.Tensor], targets: Sequence[dict]) -> dict:
        raise NotImplementedError

    def level_scores(self, outputs: dict, level: int, image: int) -> torch.Tensor:
        """[M_l, K] class probabilities of one image's locations on one level."""
        raise NotImplementedError

    def decode(self, box_outputs: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """[M, 4] head box outputs on [M, 4] anchors -> [M, 4] boxes (x1, y1, x2, y2)."""
        raise NotImplementedError

    # --- detections -------------------------------------------------------------------------
    @torch.no_grad()
    def select_detections(self, outputs: dict, anchors: list[torch.Tensor], image_sizes) -> list[dict]:
        sizes = size_tensor(image_sizes, anchors[0].device)
        results = []
        for image in range(len(image_sizes)):
            boxes, scores, labels = [], [], []
            for level, level_anchors in enumerate(anchors):
                level_scores = self.level_scores(outputs, level, image).float().flatten()
                candidates = torch.nonzero(level_scores > self.score_thresh, as_tuple=True)[0]
                kept_scores = level_scores[candidates]
                count = kept_scores.shape[0]
                # min() of an int and a traced size would freeze the size into the trace.
                k = torch.clamp(count, max=self.topk_candidates) if torch.jit.is_tracing() else min(
                    self.topk_candidates, count)
                kept_scores, order = kept_scores.topk(k)
                candidates = candidates[order]
                anchor_index = torch.div(candidates, self.num_classes, rounding_mode="floor")
                box_outputs = outputs["bbox_regression"][level][image][anchor_index].float()
                level_boxes = self.decode(box_outputs, level_anchors[anchor_index])
                if self.clip_before_nms:
                    level_boxes = clip_boxes(level_boxes[None], sizes[image:image + 1])[0]
                boxes.append(level_boxes)
                scores.append(kept_scores)
                labels.append(candidates % self.num_classes + 1)
            boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results
