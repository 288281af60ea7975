"""Pascal VOC loading on bccd: counts, the two real zero-area boxes, difficult objects."""
import shutil
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from detector.config import load_config
from detector.data import BadSampleWarning, build_dataset, class_names


def _xml_boxes(root, split):
    ids = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    boxes = []
    for stem in ids:
        for obj in ET.parse(root / "Annotations" / f"{stem}.xml").getroot().iter("object"):
            b = obj.find("bndbox")
            boxes.append((obj.findtext("name"), *(float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return ids, boxes


def test_counts_match_the_files_and_zero_area_boxes_are_reported(bccd, bccd_cfg):
    cfg = bccd_cfg()
    assert class_names(cfg) == ["Platelets", "RBC", "WBC"]
    total_images, total_boxes = 0, 0
    for split, name in (("train", "trainval"), ("test", "test")):
        ids, boxes = _xml_boxes(bccd, name)
        zero = [b for b in boxes if b[1] == b[3] or b[2] == b[4]]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = build_dataset(cfg, split)
        messages = [str(w.message) for w in caught if "zero area" in str(w.message)]
        assert len(messages) == len(zero)
        for message in messages:
            assert ".xml" in message and "RBC" in message
        if split == "test":
            assert len(dataset) == len(ids)
        assert sum(len(r.boxes) for r in dataset.records) == len(boxes) - len(zero)
        assert len(dataset.coco_gt().getAnnIds()) == len(boxes) - len(zero)
        for record in dataset.records:
            assert np.isfinite(record.boxes).all()
            assert ((record.boxes[:, 2:] - record.boxes[:, :2]) > 0).all()
        assert len(messages) == (2 if split == "train" else 0)  # SOURCE.txt: both are in trainval
        total_images += len(ids)
        total_boxes += len(boxes)
    assert (total_images, total_boxes) == (364, 4888)  # SOURCE.txt


def test_the_zero_area_images_train_without_nan(bccd, bccd_cfg):
    cfg = bccd_cfg()
    with pytest.warns(BadSampleWarning):
        dataset = build_dataset(cfg, "train")
    for stem in ("BloodImage_00338", "BloodImage_00343"):
        index = next(i for i, r in enumerate(dataset.records) if stem in r.path)
        sample = dataset[(index, 0)]
        boxes = sample["target"]["boxes"]
        assert len(boxes) > 0 and bool(((boxes[:, 2:] - boxes[:, :2]) >= 1).all()) and not boxes.isnan().any()


def test_classes_are_discovered_sorted_and_difficult_boxes_are_ignored(bccd, tmp_path):
    # A copy of three annotations with one object marked difficult.
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").symlink_to(bccd / "JPEGImages")
    stems = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"]
    for stem in stems:
        shutil.copy(bccd / "Annotations" / f"{stem}.xml", root / "Annotations")
    tree = ET.parse(root / "Annotations" / f"{stems[0]}.xml")
    first = tree.getroot().find("object")
    first.find("difficult").text = "1"
    tree.write(root / "Annotations" / f"{stems[0]}.xml")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(stems) + "\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(stems) + "\n")
    cfg = load_config(["dataset=voc", f"dataset.root={root}", "dataloader.num_workers=0"])
    _, boxes = _xml_boxes(root, "trainval")
    assert class_names(cfg) == sorted({b[0] for b in boxes}) == ["RBC", "WBC"]
    train = build_dataset(cfg, "train")
    assert sum(len(r.boxes) for r in train.records) == len(boxes) - 1
    gt = train.coco_gt()
    crowd = gt.loadAnns(gt.getAnnIds(iscrowd=True))
    assert len(crowd) == 1 and crowd[0]["difficult"] == 1
    b = first.find("bndbox")
    x1, y1, x2, y2 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    assert crowd[0]["bbox"] == [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]
    with_difficult = build_dataset(load_config(["dataset=voc", f"dataset.root={root}", "dataset.use_difficult=true"]),
                                   "train")
    assert sum(len(r.boxes) for r in with_difficult.records) == len(boxes)


def test_missing_voc_split_names_the_file(tmp_path):
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    cfg = load_config(["dataset=voc", f"dataset.root={tmp_path}", "dataset.classes=[a]"])
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        build_dataset(cfg, "train")
