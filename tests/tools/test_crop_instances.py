"""tools/crop_instances.py on real data: one crop per non-crowd box that is large enough."""
from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def load_tool():
    spec = importlib.util.spec_from_file_location("crop_instances_tool", REPO / "tools" / "crop_instances.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def written(folder: Path) -> Counter:
    return Counter(p.parent.name for p in folder.glob("*/*.jpg"))


def voc_expected(root: Path, split: str, min_size: float) -> Counter:
    """Straight from the XML files: non-difficult objects whose VOC (inclusive) width and
    height reach min_size."""
    counts = Counter()
    for stem in (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
        tree = ET.parse(root / "Annotations" / f"{stem}.xml").getroot()
        for obj in tree.iter("object"):
            if int(obj.findtext("difficult") or 0):
                continue
            x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x2 - x1 + 1 >= min_size and y2 - y1 + 1 >= min_size:
                counts[obj.findtext("name").strip()] += 1
    return counts


def test_bccd_crops_follow_the_splits_and_the_size_limit(bccd, tmp_path):
    out = tmp_path / "crops"
    # val (87 images) stands in for the training split to keep the test short.
    code = load_tool().main(["dataset=bccd", "dataset.train_split=val", "dataset.test_split=test",
                             "--output", str(out), "--min-size", "40"])
    assert code == 0
    for split, voc_split in (("train", "val"), ("test", "test")):
        expected = voc_expected(bccd, voc_split, 40)
        assert written(out / split) == expected
        assert 0 < sum(expected.values()) < sum(voc_expected(bccd, voc_split, 0).values())  # the limit bites
    summary = json.loads((out / "crops.json").read_text())
    assert sum(summary["counts"]["test"].values()) == sum(voc_expected(bccd, "test", 40).values())
    assert summary["too_small"]["test"] > 0
    # Crops are the boxes themselves (no margin): 40 px or more on each side.
    for path in list((out / "test").glob("*/*.jpg"))[:20]:
        width, height = Image.open(path).size
        assert width >= 40 and height >= 40


def test_coco_crops_leave_out_crowd_and_small_boxes(coco128, tmp_path):
    source = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    crowd_images = {a["image_id"] for a in source["annotations"] if a.get("iscrowd")}
    # A small subset that includes images with crowd regions.
    keep = {i["id"] for i in source["images"][:6]} | set(sorted(crowd_images)[:3])
    subset = {
        "images": [i for i in source["images"] if i["id"] in keep],
        "annotations": [a for a in source["annotations"] if a["image_id"] in keep],
        "categories": source["categories"],
    }
    annotations = tmp_path / "subset.json"
    annotations.write_text(json.dumps(subset))
    assert any(a.get("iscrowd") for a in subset["annotations"])
    names = {c["id"]: c["name"] for c in source["categories"]}
    min_size = 16
    expected = Counter(names[a["category_id"]] for a in subset["annotations"]
                       if not a.get("iscrowd") and a["bbox"][2] >= min_size and a["bbox"][3] >= min_size)
    out = tmp_path / "crops"
    images = str(coco128 / "train2017")
    tool = load_tool()
    code = tool.main(["dataset=coco_format", f"dataset.train.images={images}", f"dataset.train.annotations={annotations}",
                      f"dataset.test.images={images}", f"dataset.test.annotations={annotations}",
                      "--output", str(out), "--min-size", str(min_size), "--margin", "0.1"])
    assert code == 0
    assert written(out / "train") == expected
    assert written(out / "test") == expected
    # Every category has its folder (empty when it has no crop), so train/ and test/ agree on the classes.
    assert len([p for p in (out / "train").iterdir() if p.is_dir()]) == 80

    # A second run into the same folder refuses rather than mixing old and new crops.
    again = tool.main(["dataset=coco_format", f"dataset.train.images={images}", f"dataset.train.annotations={annotations}",
                       f"dataset.test.images={images}", f"dataset.test.annotations={annotations}", "--output", str(out)])
    assert again == 1


def test_crop_window_margin_and_clipping():
    import numpy as np

    from detector.data.instance_crops import crop_window

    assert crop_window(np.array([10.0, 20.0, 30.0, 60.0]), 0.0, 100, 100) == (10, 20, 30, 60)
    assert crop_window(np.array([10.0, 20.0, 30.0, 60.0]), 0.1, 100, 100) == (8, 16, 32, 64)
    assert crop_window(np.array([0.5, 0.0, 99.5, 100.0]), 0.5, 100, 100) == (0, 0, 100, 100)
    with pytest.raises(ValueError):
        from detector.data.instance_crops import crop_instances

        crop_instances(None, "/tmp/unused", min_size=-1)
