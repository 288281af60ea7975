"""COCO JSON files as users' exports leave them: read (and cached while a dataset is built),
a root category dropped, the folder their image names resolve in found."""
from __future__ import annotations

import json
import os
from functools import lru_cache

from detector.data.coco_index import DatasetError


def load_json(path: str) -> dict:
    """Parsed JSON, cached until a dataset is built (class_names and build_dataset both read it).

    The result is shared: callers must not modify it.
    """
    stat = os.stat(path)
    return _load_json_cached(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


def clear_json_cache() -> None:
    _load_json_cached.cache_clear()


@lru_cache(maxsize=2)
def _load_json_cached(path: str, _mtime: int, _size: int) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None


def drop_root_category(coco: dict) -> tuple[dict, str | None]:
    """(coco without its root category, the root's name) when the file has one, else (coco, None).

    Roboflow writes the dataset's name as category 0, the supercategory of every real class,
    with no annotation: trained as a class it would be a label never seen. The root is a
    category that no annotation uses and that every other category names as its supercategory."""
    categories = coco.get("categories")
    if not isinstance(categories, list) or len(categories) < 2 or not all(isinstance(c, dict) for c in categories):
        return coco, None
    used = {a.get("category_id") for a in coco.get("annotations", []) if isinstance(a, dict)}
    for root in categories:
        others = [c for c in categories if c is not root]
        if root.get("id") not in used and all(c.get("supercategory") == root.get("name") for c in others):
            return {**coco, "categories": others}, str(root.get("name"))
    return coco, None


def find_images_dir(coco: dict, candidates: list[str], source: str) -> tuple[str, dict]:
    """(the folder the file's image names resolve in, coco) among `candidates`, tried in order.

    When only the base names resolve (exports that write absolute paths of the labelling
    machine), the returned coco's file names are those base names. DatasetError naming the
    file, an image and the folders tried when none fits."""
    images = [i for i in coco.get("images", []) if isinstance(i, dict) and "file_name" in i]
    if not images:
        return (candidates[0] if candidates else os.path.dirname(source)), coco
    sample = [str(i["file_name"]) for i in images[:: max(1, len(images) // 8)][:8]]
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, name)) for name in sample):
            return folder, coco
    bases = [os.path.basename(name.replace("\\", "/")) for name in sample]
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, name)) for name in bases):
            renamed = [{**i, "file_name": os.path.basename(str(i["file_name"]).replace("\\", "/"))}
                       if isinstance(i, dict) and "file_name" in i else i for i in coco["images"]]
            return folder, {**coco, "images": renamed}
    raise DatasetError(f"{source}: its images (e.g. {sample[0]!r}) are in none of the folders tried: "
                       f"{', '.join(candidates)}; put them beside the JSON or in an images/ folder")
