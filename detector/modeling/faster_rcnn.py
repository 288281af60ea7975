"""Faster R-CNN: backbone + FPN, region proposals, RoI box heads.

Calling convention (torchvision's): in train mode `model(images, targets)` returns a dict of
losses; in eval mode `model(images)` returns one dict {"boxes", "scores", "labels"} per image,
with boxes in the input image's pixels. With a mask head (Mask R-CNN) targets also carry
"masks" [G, H, W] and each result "masks" [N, 1, H, W]: probabilities in the input image's pixels.
With a keypoint head (Keypoint R-CNN) targets carry "keypoints" [G, K, 3] and each result
"keypoints" [N, K, 3] (x, y, 1) in the input image's pixels and "keypoints_scores" [N, K].
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from detector.modeling.boxes import boxes_to_original
from detector.modeling.keypoint_decoding import keypoints_to_original
from detector.modeling.mask_paste import paste_masks
from detector.modeling.preprocessing import ImagePreprocessor, detector_call


class FasterRCNN(nn.Module):
    def __init__(self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module, preprocessor: ImagePreprocessor,
                 num_classes: int, pooled_levels: Sequence[str], channels_last: bool = False):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        # FPN levels the RoI heads pool from (P6 only feeds the RPN).
        self.pooled_levels = list(pooled_levels)
        # NHWC activations: oneDNN (CPU) and cuDNN (tensor cores) run convolutions faster in this
        # layout. Converting the input batch is enough -- every convolution then keeps the layout
        # -- so the weights and the state dict stay in the default layout.
        self.channels_last = channels_last

    def forward(self, images: Sequence[torch.Tensor], targets: Sequence[dict] | None = None):
        return detector_call(self, images, targets)

    def detect(self, pixels: torch.Tensor, image_sizes, padded_size, targets: Sequence[dict] | None = None):
        """The network on a preprocessed batch [N, 3, H, W]: (detections per image in the resized
        images' pixels, losses). image_sizes ((h, w) per image) and padded_size ((H, W)) may be
        int tensors [N, 2] and [2]: detector.export traces this method with them, so it and
        everything it calls keep sizes and counts as tensor operations."""
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        features = self.backbone(pixels)
        proposals, _, rpn_losses = self.rpn(list(features.values()), image_sizes, padded_size, targets)
        pooled = [features[name] for name in self.pooled_levels]
        detections, roi_losses = self.roi_heads(pooled, proposals, image_sizes, targets)
        return detections, {**rpn_losses, **roi_losses}

    def postprocess(self, detections: list[dict], image_sizes, original_sizes) -> list[dict]:
        """Detections in the input images' pixels: boxes scaled from the resized size back to the
        original (h, w) of each image (pairs, or rows of int tensors when traced)."""
        for result, resized, original in zip(detections, image_sizes, original_sizes):
            result["boxes"] = boxes_to_original(result["boxes"], resized, original)
            if "keypoints" in result:
                # x, y scale as the boxes' corners do; the third column (1) stays.
                result["keypoints"] = keypoints_to_original(result["keypoints"], resized, original)
            if "masks" in result:
                # A mask head's [N, 1, M, M] probabilities in box coordinates -> [N, 1, H, W] in the
                # input image, pasted the way the mask branch's weights expect (MaskBranch.mask_paste;
                # a head that does not say was trained here, the torchvision way).
                mode = getattr(self.roi_heads, "mask_paste", "torchvision")
                result["masks"] = paste_masks(result["masks"], result["boxes"], original, mode)
        return detections
