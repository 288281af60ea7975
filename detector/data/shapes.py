"""`shapes`: the generated default dataset, written once to a cache folder.

Each image holds 3-8 filled shapes whose class is their outline, never their colour:
circles, rectangles, triangles, plus signs and stars, in random colours, rotations and
sizes (16 px up to a third of the image), partly hiding each other (at most
`max_occlusion` of any object). The background is a smooth colour field with a fine
noise texture; clutter is thin lines, scribbles and soft blurred blobs, which by
construction are never filled sharp-edged shapes, so nothing unlabelled looks like a
class. Objects always differ clearly in colour from the background under them and from
the objects they overlap, so every label is visible: hard enough that small objects and
occlusion cost AP, learnable by a small detector on a CPU in minutes.

Each annotation's "segmentation" is the object's visible region (for Mask R-CNN): the exact
polygon it was drawn from when nothing covers it, else the pixels left visible by the
objects drawn over it, as polygons (or RLE when the visible part has a hole). OpenCV draws
with pixel centres at integer coordinates and COCO puts them at +0.5, so the polygons are
shifted by half a pixel to cover the drawn pixels; boxes keep the polygon's extent.

Every object also has four keypoints, the same for every class: the topmost, rightmost,
bottommost and leftmost points of its polygon (in the boxes' frame, so each lies on its box's
edge), visible (v=2) unless a shape drawn later covers it (v=1). They are read off the drawn
geometry and draw no random number, so the images and boxes are the same with or without them.

Everything is a function of (seed, split, image index): the same config writes the same
bytes. Writing goes to a temporary folder renamed into place under a file lock, so
concurrent ranks neither clash nor see half a dataset.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from detector.utils.file_lock import exclusive_lock
from detector.utils.progress import track

SHAPE_KINDS = ("circle", "rectangle", "triangle", "cross", "star")
# 3: annotations carry each object's visible region as a COCO segmentation (same images and boxes as 2).
# 4: and four keypoints per object, the categories their names and skeleton (same images and boxes as 3).
GENERATOR_VERSION = 4
# The keypoints of every shape, in order; a horizontal flip swaps right and left.
KEYPOINT_NAMES = ("top", "right", "bottom", "left")
KEYPOINT_SKELETON = ((1, 2), (2, 3), (3, 4), (4, 1))  # 1-based, as COCO writes skeletons
STAMP = "generator.json"  # written last: its presence means the folder is complete


def generator_params(data) -> dict:
    """Every setting that changes the generated files (the cache is rebuilt if one changes)."""
    classes = list(data["classes"]) if data["classes"] is not None else list(SHAPE_KINDS)
    if data["size_distribution"] not in ("uniform", "log_uniform"):
        raise ValueError(f"dataset.size_distribution={data['size_distribution']!r}: expected uniform or log_uniform")
    unknown = [c for c in classes if c not in SHAPE_KINDS]
    if unknown:
        raise ValueError(f"dataset.classes={classes}: the shapes generator can draw {list(SHAPE_KINDS)}, not {unknown}")
    _check_sizes(data)
    return {
        "version": GENERATOR_VERSION,
        "seed": int(data["seed"]),
        "num_train": int(data["num_train"]),
        "num_test": int(data["num_test"]),
        "image_size": int(data["image_size"]),
        "classes": classes,
        "objects_per_image": [int(v) for v in data["objects_per_image"]],
        "object_size": [float(v) for v in data["object_size"]],
        "size_distribution": str(data["size_distribution"]),
        "max_occlusion": float(data["max_occlusion"]),
        "distractors_per_image": [int(v) for v in data["distractors_per_image"]],
        "min_contrast": float(data["min_contrast"]),
        "noise_std": float(data["noise_std"]),
        "jpeg_quality": int(data["jpeg_quality"]),
    }


def _check_sizes(data) -> None:
    image_size = int(data["image_size"])
    sizes = [float(v) for v in data["object_size"]]
    # An object is placed with at least a pixel of margin on each side.
    if len(sizes) != 2 or not 1 <= sizes[0] <= sizes[1] or sizes[1] > image_size - 3:
        raise ValueError(f"dataset.object_size={sizes}: expected [smallest, largest] with "
                         f"1 <= smallest <= largest <= dataset.image_size - 3 = {image_size - 3}; "
                         f"lower the object sizes or raise dataset.image_size.")
    for key in ("objects_per_image", "distractors_per_image"):
        counts = [int(v) for v in data[key]]
        if len(counts) != 2 or not 0 <= counts[0] <= counts[1]:
            raise ValueError(f"dataset.{key}={counts}: expected [fewest, most] with 0 <= fewest <= most.")


def ensure_shapes_dataset(data) -> str:
    """Generate the dataset into data.root unless an identical one is already there."""
    params = generator_params(data)
    root = os.path.abspath(str(data["root"]))
    if _is_current(root, params):
        return root
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    # One writer; other ranks wait, then find it done.
    with open(root + ".lock", "w") as lock, exclusive_lock(lock):
        if not _is_current(root, params):
            tmp = tempfile.mkdtemp(prefix=".shapes-tmp-", dir=parent)
            try:
                write_shapes_dataset(tmp, params)
                if os.path.exists(root):
                    stale = tempfile.mkdtemp(prefix=".shapes-stale-", dir=parent)
                    os.rename(root, os.path.join(stale, "old"))
                    os.rename(tmp, root)
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    os.rename(tmp, root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def _is_current(root: str, params: dict) -> bool:
    try:
        with open(os.path.join(root, STAMP)) as handle:
            return json.load(handle) == params
    except (OSError, ValueError):
        return False


def write_shapes_dataset(folder: str, params: dict) -> None:
    os.makedirs(os.path.join(folder, "annotations"))
    categories = [{"id": i, "name": name, "supercategory": "shape", "keypoints": list(KEYPOINT_NAMES),
                   "skeleton": [list(pair) for pair in KEYPOINT_SKELETON]}
                  for i, name in enumerate(params["classes"], 1)]
    size = params["image_size"]
    workers = max(1, min(8, os.cpu_count() or 1))
    for split_code, (split, count) in enumerate((("train", params["num_train"]), ("test", params["num_test"]))):
        os.makedirs(os.path.join(folder, split))
        jobs = [(folder, split, split_code, index, params) for index in range(count)]
        desc = f"generating shapes {split}"
        if workers > 1 and count > 32 and not multiprocessing.current_process().daemon:
            # Images are independent (each has its own seed), so the order of work is free.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                results = list(track(pool.map(_render_and_write, jobs, chunksize=16), total=count, desc=desc,
                                     unit="images"))
        else:
            results = [_render_and_write(job) for job in track(jobs, desc=desc, unit="images")]
        images, annotations = [], []
        for index, objects in enumerate(results):
            image_id = index + 1
            images.append({"id": image_id, "file_name": f"{index:06d}.jpg", "width": size, "height": size})
            for label, (x1, y1, x2, y2), segmentation, keypoints in objects:
                box = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
                # Box area, as for other box-only data (VOC): COCO's small/medium/large then
                # speak of box sizes, and the largest objects do reach "large".
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                    "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": 0,
                                    "segmentation": segmentation, "keypoints": keypoints,
                                    "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0)})
        with open(os.path.join(folder, "annotations", f"{split}.json"), "w") as handle:
            json.dump({"info": {"description": "generated shapes", "generator": params},
                       "images": images, "annotations": annotations, "categories": categories}, handle)
    with open(os.path.join(folder, STAMP), "w") as handle:
        json.dump(params, handle)


def _render_and_write(job) -> list:
    folder, split, split_code, index, params = job
    cv2.setNumThreads(1)
    seed = params["seed"] & 0xFFFFFFFFFFFFFFFF  # numpy seeds must be non-negative
    image, objects = render_image(np.random.default_rng([seed, split_code, index]), params, with_keypoints=True)
    cv2.imwrite(os.path.join(folder, split, f"{index:06d}.jpg"), image[:, :, ::-1],
                [cv2.IMWRITE_JPEG_QUALITY, params["jpeg_quality"]])
    return objects


# ---------------------------------------------------------------------------- drawing

def render_image(rng: np.random.Generator, params: dict, with_masks: bool = False, with_keypoints: bool = False):
    """(HxWx3 uint8 RGB image, [(label, (x1, y1, x2, y2), segmentation), ...]); with_masks:
    also the objects' visible regions, bool [N, H, W], that the segmentations describe;
    with_keypoints: each object also carries its COCO keypoints [x, y, v] * 4 (KEYPOINT_NAMES).
    Neither option draws a random number: the image and boxes are the same either way."""
    size = params["image_size"]
    image = _background(rng, size)
    _draw_distractors(rng, image, rng.integers(params["distractors_per_image"][0],
                                               params["distractors_per_image"][1] + 1), under=True)
    background = image.copy()
    placed = []  # dicts: label, box, window (y0, y1, x0, x1), mask and visible (in the window), colour
    wanted = int(rng.integers(params["objects_per_image"][0], params["objects_per_image"][1] + 1))
    low, high = params["object_size"]
    for _ in range(wanted):
        for _attempt in range(30):
            label = int(rng.integers(len(params["classes"]))) + 1
            if params["size_distribution"] == "log_uniform":
                extent = float(math.exp(rng.uniform(math.log(low), math.log(high))))
            else:
                extent = float(rng.uniform(low, high))
            polygon = _shape_polygon(rng, params["classes"][label - 1], extent)
            width, height = extent_of(polygon)
            polygon = polygon + rng.uniform(1, [size - 1 - width, size - 1 - height])
            window, mask = _fill_mask(polygon, size)
            if mask.sum() < 16:
                continue
            if not all(_still_visible(obj, window, mask, params["max_occlusion"]) for obj in placed):
                continue
            y0, y1, x0, x1 = window
            touching = [o["colour"] for o in placed if _overlap(o, window, mask).any()]
            colour = _pick_colour(rng, background[y0:y1, x0:x1][mask], touching, params["min_contrast"])
            if colour is None:
                continue
            for obj in placed:
                _overlap(obj, window, mask, clear=True)
            _fill_polygon(image, polygon, colour)
            box = (float(polygon[:, 0].min()), float(polygon[:, 1].min()),
                   float(polygon[:, 0].max()), float(polygon[:, 1].max()))
            placed.append({"label": label, "box": box, "window": window, "mask": mask, "visible": mask.copy(),
                           "area": int(mask.sum()), "colour": colour, "polygon": polygon})
            break
    _draw_distractors(rng, image, int(rng.integers(0, 3)), under=False)
    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(params["noise_std"])
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    polygons = [o["polygon"] for o in placed]
    segmentations, masks, full = _segmentations(polygons, size)
    objects = [(o["label"], o["box"], segmentation) for o, segmentation in zip(placed, segmentations)]
    if with_keypoints:
        objects = [(*obj, _extreme_keypoints(polygons, full, i)) for i, obj in enumerate(objects)]
    return (image, objects, masks) if with_masks else (image, objects)


def _extreme_keypoints(polygons: list, full: list, index: int) -> list:
    """COCO keypoints [x, y, v] * 4 of polygons[index]: its top-, right-, bottom- and leftmost
    vertices (the first one on a tie), in the boxes' frame (OpenCV's: pixel centres at integers).
    v is 2 (visible) unless a shape drawn later covers that point's pixel, else 1 (labelled,
    hidden) -- COCO's meaning of v."""
    polygon = polygons[index]
    size = full[index].shape[0]
    picks = (int(polygon[:, 1].argmin()), int(polygon[:, 0].argmax()), int(polygon[:, 1].argmax()),
             int(polygon[:, 0].argmin()))
    keypoints = []
    for vertex in picks:
        x, y = (float(v) for v in polygon[vertex])
        # The pixel holding the point; `full` is rasterised in COCO's frame, pixel (r, c) <-> centre (c, r) here.
        column, row = (min(size - 1, max(0, int(round(v)))) for v in (x, y))
        covered = any(full[later][row, column] for later in range(index + 1, len(polygons)))
        keypoints += [round(x, 2), round(y, 2), 1 if covered else 2]
    return keypoints


def _segmentations(polygons: list, size: int):
    """COCO segmentations of the visible regions of objects drawn in this order (later ones on
    top), those regions as bool [N, size, size], and each object's whole region (bool [size, size]
    per object, before covering). Rasterised as COCO does (pycocotools), so evaluation and
    training see exactly these pixels."""
    from pycocotools import mask as mask_utils

    from detector.data.masks import mask_to_polygons, mask_to_rle, segmentation_to_mask

    # Half a pixel: OpenCV's pixel centres are at integers, COCO's at +0.5 (see the module doc).
    exact = [[[round(float(v), 2) for v in (polygon + 0.5).reshape(-1)]] for polygon in polygons]
    full = [mask_utils.decode(mask_utils.frPyObjects(p, size, size)[0]).astype(bool) for p in exact]
    segmentations: list = [None] * len(polygons)
    visible = np.zeros((len(polygons), size, size), bool)
    covered = np.zeros((size, size), bool)
    for i in reversed(range(len(polygons))):
        visible[i] = full[i] & ~covered
        covered |= full[i]
        if np.array_equal(visible[i], full[i]):
            segmentations[i] = exact[i]
            continue
        traced = mask_to_polygons(visible[i]) if visible[i].any() else []
        # Tracing fills holes (an object drawn inside another): those keep their pixels as RLE.
        exact_trace = traced and np.array_equal(segmentation_to_mask(traced, size, size).astype(bool), visible[i])
        segmentations[i] = traced if exact_trace else mask_to_rle(visible[i])
    return segmentations, visible, full


def _overlap(obj: dict, window, mask: np.ndarray, clear: bool = False) -> np.ndarray:
    """The part of obj's visible pixels that `mask` (at `window`) covers; `clear` hides it."""
    ay0, ay1, ax0, ax1 = obj["window"]
    by0, by1, bx0, bx1 = window
    y0, y1, x0, x1 = max(ay0, by0), min(ay1, by1), max(ax0, bx0), min(ax1, bx1)
    if y0 >= y1 or x0 >= x1:
        return np.zeros(0, bool)
    mine = obj["visible"][y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0]
    covered = mine & mask[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
    if clear:
        mine &= ~covered
    return covered


def _still_visible(obj: dict, window, mask: np.ndarray, max_occlusion: float) -> bool:
    hidden_now = obj["area"] - int(obj["visible"].sum())
    return hidden_now + int(_overlap(obj, window, mask).sum()) <= max_occlusion * obj["area"]


def extent_of(polygon: np.ndarray) -> tuple[float, float]:
    return float(polygon[:, 0].max()), float(polygon[:, 1].max())


def _shape_polygon(rng: np.random.Generator, kind: str, extent: float) -> np.ndarray:
    """Polygon (N x 2) of `kind`, randomly rotated, scaled so its box's longer side is `extent`,
    with its box's top-left corner at (0, 0). Circles are 64-gons."""
    if kind == "circle":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        points = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "rectangle":
        aspect = rng.uniform(0.45, 1.0)
        points = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], dtype=np.float64)
    elif kind == "triangle":
        angles = np.radians(90 + 120 * np.arange(3) + rng.uniform(-12, 12, 3))
        points = np.stack([np.cos(angles), np.sin(angles)], 1)
    elif kind == "cross":
        a = rng.uniform(0.28, 0.4)  # half the arm thickness
        points = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                           [-1, -a], [-a, -a]], dtype=np.float64)
    elif kind == "star":
        inner = rng.uniform(0.38, 0.5)
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        radius = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        points = np.stack([radius * np.cos(t), radius * np.sin(t)], 1)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    if kind != "circle":
        theta = rng.uniform(0, 2 * math.pi)
        rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        points = points @ rotation.T
    points = points - points.min(0)
    return points * (extent / points.max())


def _fill_mask(polygon: np.ndarray, size: int):
    """((y0, y1, x0, x1) window around the polygon, its bool mask inside that window)."""
    x0, y0 = (max(0, int(v) - 1) for v in polygon.min(0))
    x1, y1 = (min(size, int(v) + 2) for v in polygon.max(0))
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    shifted = np.round((polygon - [x0, y0]) * 16).astype(np.int32)
    cv2.fillPoly(mask, [shifted], 1, lineType=cv2.LINE_8, shift=4)
    return (y0, y1, x0, x1), mask.astype(bool)


def _fill_polygon(image: np.ndarray, polygon: np.ndarray, colour) -> None:
    cv2.fillPoly(image, [np.round(polygon * 16).astype(np.int32)], tuple(int(c) for c in colour),
                 lineType=cv2.LINE_AA, shift=4)


def _pick_colour(rng, under: np.ndarray, neighbours: list, min_contrast: float):
    """A colour at least `min_contrast` (RGB distance) from the background it covers and
    from the objects it touches, or None."""
    mean = under.reshape(-1, 3).astype(np.float32).mean(0)
    for _ in range(40):
        colour = rng.integers(0, 256, 3).astype(np.float32)
        if np.linalg.norm(colour - mean) < min_contrast:
            continue
        if any(np.linalg.norm(colour - np.asarray(n, np.float32)) < 0.75 * min_contrast for n in neighbours):
            continue
        return colour.astype(np.uint8)
    return None


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field plus a fine texture."""
    grid = int(rng.integers(2, 6))
    base = rng.uniform(30, 225, 3)
    field = base + rng.uniform(-45, 45, (grid, grid, 3))
    field = cv2.resize(field.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    texture = cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), rng.uniform(0.8, 2.5))
    texture *= rng.uniform(6, 18) / max(float(texture.std()), 1e-6)
    return np.clip(field + texture[:, :, None], 0, 255).astype(np.uint8)


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, count: int, under: bool) -> None:
    """Thin lines, scribbles and (under the objects only) soft blurred blobs."""
    size = image.shape[0]
    for _ in range(int(count)):
        kind = rng.integers(3 if under else 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if kind == 0:
            p1, p2 = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
            cv2.line(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), colour, int(rng.integers(1, 3)),
                     cv2.LINE_AA)
        elif kind == 1:
            steps = rng.normal(0, 6, (int(rng.integers(8, 25)), 2)).cumsum(0) + rng.uniform(0, size, 2)
            cv2.polylines(image, [steps.astype(np.int32)], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            # Drawn at a quarter of the resolution: it is blurred into a soft patch anyway.
            small = max(1, size // 4)
            layer = np.zeros((small, small), np.float32)
            centre = tuple(int(v) for v in rng.uniform(0, small, 2))
            axes = tuple(int(v) for v in rng.uniform(10 / 4, small / 5, 2))
            cv2.ellipse(layer, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
            layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(2, 4)) * rng.uniform(0.25, 0.45)
            alpha = cv2.resize(layer, (size, size), interpolation=cv2.INTER_LINEAR)[:, :, None]
            blended = image * (1 - alpha) + np.asarray(colour, np.float32) * alpha
            image[:] = blended.astype(np.uint8)
