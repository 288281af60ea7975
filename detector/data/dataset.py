"""The detection dataset: image records in, (image tensor, target) out, bad samples handled.

Bad-sample policy (`on_bad_sample`):
  "skip"  - warn with the file and the reason, replace the sample by another one chosen
            from (seed, stream position, attempt), and report the message in the batch's
            "skipped" list so the trainer can count them;
  "error" - raise BadSampleError naming the file and the reason.
Annotation problems were found when the records were built (see coco_index); image
problems (missing, corrupt, wrong size) are found here, when the image is decoded.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch

from detector.data.coco_index import ImageRecord
from detector.data.image_io import DEFAULT_MAX_IMAGE_PIXELS, BadImageError, read_image_rgb
from detector.data.transforms import apply_transform

ON_BAD_SAMPLE = ("skip", "error")
# A training sample is replaced by at most this many others before giving up: reaching
# it means most of the dataset is unreadable, which no policy should paper over.
MAX_REPLACEMENTS = 50


class BadSampleWarning(UserWarning):
    """A sample (image or annotation) that was skipped or a box that was dropped."""


class BadSampleError(RuntimeError):
    """A bad sample under on_bad_sample=error; the message names the file and the reason."""


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


class DetectionDataset(torch.utils.data.Dataset):
    """Map-style dataset over ImageRecords.

    Training (`train=True`): indexed by (index, stream_position) pairs from
    samplers.TrainBatchSampler; `transform` runs with a seed derived from (seed, position).
    Testing: indexed by int, no transform, bad images come back with image=None.
    with_masks: training targets also get "masks" (uint8 [G, H, W], one per box, in the
    augmented image's pixels), decoded from the records' compact segmentations
    (build.build_dataset(with_masks=True) prepares them); box-only training decodes nothing.
    keypoint_flip: for a keypoint model, the flip permutation of the dataset's keypoints
    (detector/data/keypoints.py); training targets then get "keypoints" (float32 [G, K, 3])
    from the records' arrays (build.build_dataset(with_keypoints=True) prepares them).
    """

    def __init__(self, records: list[ImageRecord], class_names: list[str], label_to_category_id: dict[int, int],
                 gt_dict, train: bool, transform=None, seed: int = 0, on_bad_sample: str = "skip",
                 min_box_size: float = 1.0, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, problems=(),
                 with_masks: bool = False, keypoint_flip: np.ndarray | None = None):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(f"dataset.on_bad_sample={on_bad_sample!r}: expected one of {ON_BAD_SAMPLE}")
        self.records = records
        self.class_names = list(class_names)
        self.label_to_category_id = dict(label_to_category_id)
        self._gt_dict = gt_dict  # a COCO dict, or a function that builds it
        self.train = train
        self.transform = transform
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF  # numpy seeds must be non-negative
        self.on_bad_sample = on_bad_sample
        self.min_box_size = float(min_box_size)
        self.max_image_pixels = int(max_image_pixels)
        self.problems = list(problems)
        self.with_masks = bool(with_masks)
        self.keypoint_flip = keypoint_flip
        self._coco_gt = None

    def __len__(self) -> int:
        return len(self.records)

    def coco_gt(self):
        """pycocotools COCO object of this split, crowd (and VOC difficult) regions as iscrowd=1."""
        if self._coco_gt is None:
            from pycocotools.coco import COCO

            coco = COCO()
            coco.dataset = self.gt_dict
            with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
                coco.createIndex()
            self._coco_gt = coco
        return self._coco_gt

    @property
    def gt_dict(self) -> dict:
        """The split's COCO dict for evaluation (crowd regions kept, bad boxes left out)."""
        if callable(self._gt_dict):
            self._gt_dict = self._gt_dict()
        return self._gt_dict

    def aspect_groups(self) -> list[int]:
        """0 for landscape (width >= height), 1 for portrait, from the annotated sizes."""
        return [0 if r.width >= r.height else 1 for r in self.records]

    def __getitem__(self, key):
        if self.train:
            index, position = key
            return self._training_sample(int(index), int(position))
        return self._test_sample(int(key))

    def _load(self, record: ImageRecord) -> np.ndarray:
        if record.problem is not None:
            raise BadImageError(record.path, record.problem)
        return read_image_rgb(record.path, (record.width, record.height), self.max_image_pixels)

    def _bad(self, error: BadImageError, what: str) -> str:
        message = f"{error.path}: {error.reason}"
        if self.on_bad_sample == "error":
            raise BadSampleError(f"bad sample {message} (set dataset.on_bad_sample=skip to skip such samples, "
                                 "or run tools/check_dataset.py to list every problem)")
        warnings.warn(f"skipping bad sample {message}; {what}", BadSampleWarning, stacklevel=2)
        return message

    def _training_sample(self, index: int, position: int) -> dict:
        skipped = []
        for attempt in range(MAX_REPLACEMENTS + 1):
            record = self.records[index]
            try:
                image = self._load(record)
                break
            except BadImageError as error:
                skipped.append(self._bad(error, "replaced by another training image"))
                index = int(np.random.default_rng([self.seed, position, attempt + 1]).integers(len(self.records)))
        else:
            raise BadSampleError(f"{MAX_REPLACEMENTS + 1} bad samples in a row while replacing bad samples: "
                                 f"most of the training set is unusable; last: {skipped[-1]}")
        sample_seed = int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])
        masks = keypoints = None
        if self.with_masks:
            packed = record.segmentations   # masks.PackedSegmentations (None: no boxes)
            masks = (packed.decode(record.height, record.width) if packed is not None
                     else np.zeros((0, record.height, record.width), np.uint8))
        if self.keypoint_flip is not None:
            keypoints = record.keypoints if record.keypoints is not None else np.zeros(
                (len(record.boxes), len(self.keypoint_flip), 3), np.float32)
        image, boxes, labels, *extra = apply_transform(self.transform, image, record.boxes, record.labels, sample_seed,
                                                       self.min_box_size, masks=masks, keypoints=keypoints,
                                                       flip_permutation=self.keypoint_flip)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                  "image_id": record.image_id}
        if self.with_masks:
            target["masks"] = torch.from_numpy(extra.pop(0))
        if self.keypoint_flip is not None:
            target["keypoints"] = torch.from_numpy(extra.pop(0))
        return {"image": image_to_tensor(image), "target": target, "skipped": skipped}

    def _test_sample(self, index: int) -> dict:
        record = self.records[index]
        sample = {"image": None, "image_id": record.image_id, "file_name": record.path, "skipped": []}
        try:
            sample["image"] = image_to_tensor(read_image_rgb(record.path, (record.width, record.height),
                                                             self.max_image_pixels))
        except BadImageError as error:
            sample["skipped"].append(self._bad(error, "this test image gets no detections"))
        return sample
