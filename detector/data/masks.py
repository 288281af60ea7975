"""Instance masks in COCO's three spellings, and back.

A COCO annotation's "segmentation" is one of
  - polygons: [[x1, y1, x2, y2, ...], ...], pixel coordinates, the parts of one object
    (COCO draws their union; polygons cannot have holes);
  - uncompressed RLE: {"size": [height, width], "counts": [int, ...]} (what crowd regions use);
  - compressed RLE: {"size": [height, width], "counts": "string"} (what results files use).
Run lengths go down the columns (column-major), starting with a run of zeros.

pycocotools.mask does the rasterising and the run-length coding, so masks here are the
pixels COCOeval itself sees. Binary masks are numpy uint8 arrays [height, width] of 0/1.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils


class MaskFormatError(ValueError):
    """A segmentation that is not one of COCO's three spellings, or does not fit its image."""


def _where(ann_id: Any) -> str:
    return "Segmentation" if ann_id is None else f"Annotation id {ann_id}: segmentation"


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)


def check_segmentation(segmentation: Any, height: int | None = None, width: int | None = None,
                       ann_id: Any = None) -> str:
    """The kind of `segmentation` ("polygons", "rle" or "compressed_rle"), or MaskFormatError.

    With `height` and `width`, an RLE must also be of that size (the image's)."""
    where = _where(ann_id)
    if isinstance(segmentation, list):
        if not segmentation:
            raise MaskFormatError(f"{where} is an empty list; expected polygons [[x1, y1, x2, y2, ...], ...].")
        for index, polygon in enumerate(segmentation):
            if not isinstance(polygon, (list, tuple)) or not all(_is_number(v) for v in polygon):
                raise MaskFormatError(f"{where} polygon #{index} is {str(polygon)[:80]}; "
                                      "expected a flat list of x, y pixel coordinates.")
            if len(polygon) % 2:
                raise MaskFormatError(f"{where} polygon #{index} has an odd number of coordinates "
                                      f"({len(polygon)}); expected x, y pairs.")
        return "polygons"
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
            raise MaskFormatError(f"{where} is an RLE with size {size!r}; expected [height, width].")
        if height is not None and width is not None and list(size) != [int(height), int(width)]:
            raise MaskFormatError(f"{where} is an RLE of size {list(size)} (height, width) but its image is "
                                  f"{int(height)}x{int(width)}; the RLE must cover the whole image.")
        if isinstance(counts, (str, bytes)):
            return "compressed_rle"
        if isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            if sum(counts) != size[0] * size[1]:
                raise MaskFormatError(f"{where} is an RLE whose run lengths add up to {sum(counts)}, "
                                      f"not height*width = {size[0] * size[1]}.")
            return "rle"
        raise MaskFormatError(f"{where} is an RLE with counts of type {type(counts).__name__}; expected a list "
                              "of run lengths or a compressed string.")
    raise MaskFormatError(f"{where} is a {type(segmentation).__name__}; expected polygons (a list of lists) "
                          "or an RLE dict with 'size' and 'counts'.")


def segmentation_to_rle(segmentation: Any, height: int, width: int, ann_id: Any = None) -> dict:
    """Any COCO segmentation -> one compressed RLE (pycocotools' form: counts are bytes).

    Polygons with fewer than three points have no area and are left out (COCO has a few);
    an annotation made only of those gives an empty mask. `ann_id` names the annotation in errors."""
    height, width = int(height), int(width)
    kind = check_segmentation(segmentation, height, width, ann_id)
    if kind == "polygons":
        # frPyObjects reads a 4-number list as a box: polygons need 3 points (6 numbers) anyway.
        polygons = [[float(v) for v in polygon] for polygon in segmentation if len(polygon) >= 6]
        if not polygons:
            return mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if kind == "rle":
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    # pycocotools decodes a string whose runs do not fill the image into garbage, silently.
    runs = compressed_counts(counts, ann_id)
    if sum(runs) != height * width or min(runs, default=0) < 0:
        raise MaskFormatError(f"{_where(ann_id)} is a compressed RLE whose runs add up to {sum(runs)} pixels "
                              f"(or are negative), not height*width = {height * width}.")
    return {"size": [height, width], "counts": counts}


def compressed_counts(counts: bytes | str, ann_id: Any = None) -> list[int]:
    """The run lengths of a compressed RLE string (COCO's variant of LEB128).

    Each character carries 5 bits (value - 48); 0x20 says another character follows and 0x10
    in the last one is the sign. From the third run on, a value is the difference to the run
    two before (runs of zeros and of ones each change slowly)."""
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise MaskFormatError(f"{_where(ann_id)} is a compressed RLE that ends in the middle of a number.")
            char = data[position] - 48
            if not 0 <= char < 64:
                raise MaskFormatError(f"{_where(ann_id)} is a compressed RLE with the invalid character "
                                      f"{chr(data[position])!r}.")
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def segmentation_to_mask(segmentation: Any, height: int, width: int, ann_id: Any = None) -> np.ndarray:
    """Any COCO segmentation -> binary mask uint8 [height, width]."""
    return rle_to_mask(segmentation_to_rle(segmentation, height, width, ann_id))


def annotation_to_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """The mask of one COCO annotation of an image of `height` x `width` (errors name its id)."""
    if "segmentation" not in annotation:
        raise MaskFormatError(f"Annotation id {annotation.get('id')} has no 'segmentation'; a mask model needs "
                              "polygons or RLE for every object.")
    return segmentation_to_mask(annotation["segmentation"], height, width, annotation.get("id"))


def rle_to_mask(rle: dict) -> np.ndarray:
    """Compressed (or uncompressed) RLE -> binary mask uint8 [height, width]."""
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle)


def _jsonable(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def mask_to_rle(mask: np.ndarray) -> dict:
    """Binary mask [height, width] (any dtype; nonzero is inside) -> compressed RLE whose counts
    are a str, ready for json.dump (the results-file form)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_rle takes one mask [height, width], got shape {mask.shape}.")
    return masks_to_rles(mask[None])[0]


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """Binary masks [N, height, width] -> N compressed RLEs with str counts (one encode call)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks_to_rles takes masks [N, height, width], got shape {masks.shape}.")
    # pycocotools wants [height, width, N] in column-major order.
    stacked = np.asfortranarray(np.transpose(masks != 0, (1, 2, 0)).astype(np.uint8))
    return [_jsonable(rle) for rle in mask_utils.encode(stacked)]


def rle_area(rle: dict) -> int:
    """Number of mask pixels of an RLE (COCO's area of a mask)."""
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return int(mask_utils.area(rle))


def rle_to_box(rle: dict) -> list[float]:
    """Tight box [x, y, width, height] around an RLE (zeros when it is empty)."""
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return [float(v) for v in mask_utils.toBbox(rle)]


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Binary mask -> COCO polygons that rasterise back to the same pixels.

    Each polygon follows the outer boundary of one connected region, a quarter pixel inside
    the pixel edges: pycocotools counts a pixel when its centre is inside, so the round trip
    is exact for masks without holes. Holes are filled (COCO polygons cannot carry them);
    use RLE for masks with holes."""
    import cv2

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons takes one mask [height, width], got shape {mask.shape}.")
    # Tracing the doubled mask puts the contour points at the centres of the half-pixels on the
    # boundary, i.e. 0.25 px inside the region's pixel edges, never through a pixel centre.
    doubled = np.repeat(np.repeat((mask != 0).astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        polygons.append([float(v) for v in points.reshape(-1)])
    return polygons


def polygons_area(polygons: Sequence[Sequence[float]], height: int, width: int) -> int:
    """Pixel area of the union of `polygons` as COCO rasterises them."""
    return rle_area(segmentation_to_rle([list(p) for p in polygons], height, width))


# ---------------------------------------------------------------------------- training records

@dataclass(frozen=True)
class PackedSegmentations:
    """One image's box segmentations, checked, in a few flat arrays: what a training record
    keeps until its sample is drawn. Few Python objects per image (not a list per polygon
    and a float per coordinate), so COCO 2017's 860k annotations stay small and forked
    loader workers do not copy them page by page as they touch reference counts.

    Box k's mask is the union of its polygons (parts[k] of them, their sizes in part_sizes,
    their x, y numbers one after the other in coords), or rles[k] when it was an RLE."""

    coords: np.ndarray          # float32 [sum(part_sizes)]
    part_sizes: np.ndarray      # int32 [number of polygons]: numbers per polygon
    parts: np.ndarray           # int32 [G]: polygons per box
    rles: tuple = ()            # per box: a compressed RLE dict (bytes counts), or None for polygons

    def __len__(self) -> int:
        return len(self.parts)

    def decode(self, height: int, width: int) -> np.ndarray:
        """Binary masks uint8 [G, height, width], one per box."""
        ends = np.cumsum(self.part_sizes)
        rles, polygon = [], 0
        for box, count in enumerate(self.parts.tolist()):
            rle = self.rles[box] if self.rles else None
            if rle is not None:
                rles.append(rle)
                continue
            polygons = [self.coords[ends[i] - self.part_sizes[i]:ends[i]] for i in range(polygon, polygon + count)]
            polygon += count
            if polygons:
                rles.append(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))
            else:   # only degenerate parts (fewer than 3 points): no pixels
                rles.append(mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0])
        if not rles:
            return np.zeros((0, height, width), dtype=np.uint8)
        # decode gives [height, width, G] in column-major order; the pipeline wants C-order masks.
        return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))


def pack_segmentations(segmentations: Sequence[Any], height: int, width: int,
                       ann_ids: Sequence[Any] | None = None) -> PackedSegmentations:
    """The COCO segmentations of one image's boxes (polygons, RLE or compressed RLE), checked and
    packed. MaskFormatError naming the annotation id when one is missing, malformed, or an RLE
    that does not cover the `height` x `width` image."""
    ann_ids = list(ann_ids) if ann_ids is not None else [None] * len(segmentations)
    coords, part_sizes, parts, rles = [], [], [], []
    for segmentation, ann_id in zip(segmentations, ann_ids):
        if segmentation is None:
            raise MaskFormatError(f"Annotation id {ann_id} has no segmentation; a mask model needs polygons or RLE "
                                  "for every object.")
        polygons = checked_polygons(segmentation, height, width, ann_id)
        if polygons is not None or isinstance(segmentation, list):
            kept = [p for p in (polygons or []) if len(p) >= 6]   # fewer than 3 points: no area
            coords.extend(kept)
            part_sizes.extend(len(p) for p in kept)
            parts.append(len(kept))
            rles.append(None)
        else:
            parts.append(0)
            rles.append(segmentation_to_rle(segmentation, height, width, ann_id))
    coords = np.concatenate(coords).astype(np.float32) if coords else np.zeros(0, np.float32)
    return PackedSegmentations(coords, np.asarray(part_sizes, dtype=np.int32),
                               np.asarray(parts, dtype=np.int32),
                               tuple(rles) if any(r is not None for r in rles) else ())


def checked_polygons(segmentation: Any, height: int | None, width: int | None,
                     ann_id: Any = None) -> list[np.ndarray] | None:
    """A segmentation's polygons as arrays, None when it is a well-formed RLE of a `height` x
    `width` image, or MaskFormatError naming `ann_id` and what is wrong with it."""
    polygons = _polygon_arrays(segmentation)
    if polygons is None:   # not plain polygons: an RLE, or a malformed one (named by the check)
        check_segmentation(segmentation, height, width, ann_id)
    return polygons


def _polygon_arrays(segmentation: Any) -> list[np.ndarray] | None:
    """Well-formed polygons as float64 arrays, checked in numpy (COCO 2017 has 40M numbers:
    check_segmentation's per-number checks would take a minute); None when `segmentation`
    is not a non-empty list of flat, finite, even-length lists of numbers."""
    if not isinstance(segmentation, list) or not segmentation:
        return None
    arrays = []
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) % 2:
            return None
        try:
            array = np.asarray(polygon)
        except (TypeError, ValueError):   # ragged nesting
            return None
        # Integers or floats only (strings, None or all-bool lists have another dtype kind).
        if array.ndim != 1 or array.dtype.kind not in "iuf" or not np.isfinite(array).all():
            return None
        arrays.append(array.astype(np.float64, copy=False))
    return arrays
