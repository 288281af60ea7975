"""`dataset=auto dataset.path=DIR`: every layout users bring gives the boxes and classes a COCO
JSON written from the same annotations gives (detector/data/layout_detection.py, yolo.py,
voc.py, coco_format.py, folder_format.py); folders that fit no layout are refused by name."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.config import load_config
from detector.data.coco_format import CocoFormat
from detector.data.coco_index import DatasetError
from detector.data.formats import build_format

_spec = importlib.util.spec_from_file_location("folder_datasets", Path(__file__).with_name("folder_datasets.py"))
fd = importlib.util.module_from_spec(_spec)
sys.modules["folder_datasets"] = fd   # its dataclasses look their module up
_spec.loader.exec_module(fd)

COMMON = dict(name="reference", classes=None, filter_empty=False, on_bad_sample="skip", max_image_pixels=89478485)


def reference(tmp_path: Path, images: list, classes=fd.CLASSES) -> dict:
    """file name -> (sorted (class name, x1, y1, x2, y2) rows) as CocoFormat reads a plain COCO JSON."""
    folder = tmp_path / "reference"
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    fd.write_coco(folder, images, categories=cats)
    fmt = CocoFormat(train={"images": str(folder), "annotations": str(folder / "annotations.json")},
                     test={"images": str(folder), "annotations": str(folder / "annotations.json")}, **COMMON)
    return boxes_by_name(fmt.index("train"))


def boxes_by_name(*indices) -> dict:
    out = {}
    for index in indices:
        for record in index.records:
            assert record.problem is None, record.problem
            rows = [(index.class_names[int(label) - 1], *np.round(box, 2).tolist())
                    for box, label in zip(record.boxes, record.labels)]
            out[os.path.basename(record.path)] = sorted(rows)
    return out


def assert_same_boxes(found: dict, expected: dict) -> None:
    assert sorted(found) == sorted(expected)
    for name, rows in expected.items():
        assert [r[0] for r in found[name]] == [r[0] for r in rows], name
        np.testing.assert_allclose([r[1:] for r in found[name]], [r[1:] for r in rows], atol=0.01,
                                   err_msg=name) if rows else None


def auto(path: Path, *overrides: str):
    return build_format(load_config(["dataset=auto", f"dataset.path={path}", *overrides]))


def both_splits(fmt):
    return fmt.index("train"), fmt.index("test")


# ---- each layout against the reference COCO JSON -------------------------------------------------

def test_coco_single_file_and_its_carved_split(tmp_path):
    images = fd.sample_images()
    fd.write_coco(tmp_path / "data" / "images", images)
    (tmp_path / "data" / "images" / "annotations.json").rename(tmp_path / "data" / "_annotations.coco.json")
    fmt = auto(tmp_path / "data")
    train, test = both_splits(fmt)
    assert fmt.layout().kind == "coco" and fmt.class_names() == fd.CLASSES
    assert_same_boxes(boxes_by_name(train, test), reference(tmp_path, images))
    assert not {r.path for r in train.records} & {r.path for r in test.records}


def test_coco_split_folders_drop_the_roboflow_root_category(tmp_path):
    images = fd.sample_images()
    # Roboflow: category 0 is the dataset's name, the supercategory of the others, unused.
    cats = [{"id": 0, "name": "animals", "supercategory": "none"}] + [
        {"id": i + 1, "name": c, "supercategory": "animals"} for i, c in enumerate(fd.CLASSES)]
    root = tmp_path / "export"
    for split, part in (("train", images[:8]), ("valid", images[8:10]), ("test", images[10:])):
        fd.write_coco(root / split, part, json_name="_annotations.coco.json", categories=cats)
    (root / "README.roboflow.txt").write_text("Exported via roboflow.com\n")
    fmt = auto(root)
    train, test = both_splits(fmt)
    assert fmt.class_names() == fd.CLASSES   # not "animals"
    assert any("'animals'" in note and "dropped" in note for note in fmt.layout().notes)
    assert sorted(os.path.basename(r.path) for r in test.records) == sorted(i.name for i in images[10:])
    assert_same_boxes(boxes_by_name(train, test), reference(tmp_path, images[:8] + images[10:]))
    # Named explicitly: dataset=coco_format with dataset.path.
    named = build_format(load_config(["dataset=coco_format", f"dataset.path={root}"]))
    assert named.class_names() == fd.CLASSES and named.name == "export"


def test_voc_standard_folder(tmp_path):
    images = fd.sample_images()
    root = tmp_path / "VOC"
    fd.write_voc_flat(root / "Annotations", root / "JPEGImages", images)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    stems = [os.path.splitext(i.name)[0] for i in images]
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(stems[:9]) + "\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(stems[9:]) + "\n")
    # VOC reads JPEGImages/<id>.jpg when <filename> is stale: give every image that name.
    for img in images:
        os.replace(root / "JPEGImages" / img.name, root / "JPEGImages" / (os.path.splitext(img.name)[0] + ".jpg"))
    fmt = auto(root)
    train, test = both_splits(fmt)
    assert fmt.layout().description.startswith("Pascal VOC folder")
    expected = {os.path.splitext(k)[0] + ".jpg": v for k, v in reference(tmp_path, images).items()}
    assert_same_boxes(boxes_by_name(train, test), expected)
    assert len(test.records) == 3


@pytest.mark.parametrize("two_folders", [False, True])
def test_voc_flat_export_without_split_files(tmp_path, two_folders):
    images = fd.sample_images()
    root = tmp_path / "labelimg"
    fd.write_voc_flat(root / ("annotations" if two_folders else ""), root / ("images" if two_folders else ""), images)
    fmt = auto(root)
    train, test = both_splits(fmt)
    assert fmt.layout().kind == "voc" and fmt.class_names() == sorted(fd.CLASSES)
    # The background image has an XML file without objects, as LabelImg writes on save.
    expected = reference(tmp_path, images)
    assert_same_boxes(boxes_by_name(train, test), expected)
    # dataset=voc takes the same folder as dataset.root (no ImageSets/Main) or dataset.path.
    for key in ("root", "path"):
        named = build_format(load_config(["dataset=voc", f"dataset.{key}={root}"]))
        assert_same_boxes(boxes_by_name(*both_splits(named)), expected)


def test_voc_xml_files_named_apart_from_their_images_find_them_by_filename_or_path(tmp_path):
    # What an XML file's image is, when the file names differ (the XML saved under another name
    # than the image): the image of the same stem when there is one, even if <filename> names
    # another image; else the image <filename> names, else the one <path>'s base name names
    # (another machine's disk, Windows separators); else none, and the XML is named as a problem.
    images = fd.sample_images(6)
    root = tmp_path / "exported"
    fd.write_voc_flat(root / "annotations", root / "images", images)
    xml = {os.path.splitext(img.name)[0]: img for img in images}
    for stem in ("img_01", "img_02", "img_03"):
        (root / "annotations" / f"{stem}.xml").unlink()
    write = lambda name, img, filename, path: (root / "annotations" / name).write_text(fd.voc_xml(img, filename, path))
    # <filename> a file that does not exist (renamed since), <path> absolute on the labelling machine.
    write("scan_0001.xml", xml["img_01"], "img_01_edited.jpg", "C:\\Users\\someone\\Pictures\\img_01.JPG")
    # <filename> the image itself; <path> a file the folder does not hold.
    write("scan_0002.xml", xml["img_02"], "img_02.png", "/home/annotator/pets/IMG_9999.png")
    # The same stem as an image wins over a <filename> that names another image.
    write("img_00.xml", xml["img_00"], "img_04.bmp", "/home/annotator/pets/img_04.bmp")
    # Nothing names an image that is here.
    write("scan_0003.xml", xml["img_03"], "img_03_old.jpeg", "D:\\old export\\img_03_old.jpeg")

    index = auto(root).layout().index("all", sorted(fd.CLASSES), False)
    kept = [i for i in images if i.name != "img_03.jpeg"]
    assert_same_boxes(boxes_by_name(index), reference(tmp_path, kept))
    missing = [p for p in index.problems if p.kind == "missing_image"]
    assert [os.path.basename(p.file) for p in missing] == ["scan_0003.xml"]
    assert "no image for it: looked for scan_0003.* and its <filename>/<path>" in missing[0].reason


def test_yolo_roboflow_export_dict_names_and_unresolvable_paths(tmp_path):
    images = fd.sample_images()
    root = tmp_path / "rf"
    for split, part in (("train", images[:8]), ("valid", images[8:])):
        fd.write_yolo_split(root / split / "images", root / split / "labels", part)
    (root / "data.yaml").write_text("path: ../datasets/rf\ntrain: ../train/images\nval: ../valid/images\n"
                                    "nc: 3\nnames: {0: cat, 1: dog, 2: bird}\n")
    (root / "README.roboflow.txt").write_text("Exported via roboflow.com\n")
    fmt = auto(root)
    train, test = both_splits(fmt)
    assert fmt.layout().kind == "yolo" and fmt.class_names() == fd.CLASSES   # data.yaml's order, not sorted
    assert len(test.records) == 4   # no test split: valid tests
    assert_same_boxes(boxes_by_name(train, test), reference(tmp_path, images))
    background = [r for r in test.records if os.path.basename(r.path) == images[-1].name]
    assert len(background) == 1 and len(background[0].boxes) == 0


def test_yolo_ultralytics_tree_list_names_txt_list_and_polygons(tmp_path):
    images = fd.sample_images()
    root = tmp_path / "ul"
    polygon_image = images[1].name   # two boxes, both as polygons
    fd.write_yolo_split(root / "images" / "train", root / "labels" / "train", images[:9], polygons=(polygon_image,))
    fd.write_yolo_split(root / "images" / "val", root / "labels" / "val", images[9:])
    (root / "train.txt").write_text("".join(f"./images/train/{i.name}\n" for i in images[:9]))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: train.txt\nval: [images/val]\nnames: [cat, dog, bird]\n")
    fmt = build_format(load_config(["dataset=yolo", f"dataset.path={root}"]))
    train, test = both_splits(fmt)
    assert_same_boxes(boxes_by_name(train, test), reference(tmp_path, images))
    with_polygon = next(r for r in train.records if os.path.basename(r.path) == polygon_image)
    assert with_polygon.segmentations is not None and len(with_polygon.segmentations[0][0]) == 8
    assert train.has_masks and fmt.has_masks()


def test_yolo_label_lines_that_cannot_be_read_are_named(tmp_path):
    images = fd.sample_images(4)
    fd.write_yolo_split(tmp_path / "images" / "train", tmp_path / "labels" / "train", images)
    (tmp_path / "labels" / "train" / "img_00.txt").write_text("0 0.5 0.5 0.2\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [cat, dog, bird]\n")
    index = auto(tmp_path).layout().index("train", fd.CLASSES, False)
    bad = [p for p in index.problems if p.kind == "bad_label_line"]
    assert len(bad) == 1 and "img_00.txt line 1: 4 values" in bad[0].reason
    assert next(r for r in index.records if r.path.endswith("img_00.jpg")).problem is not None


# ---- folders that fit no layout ------------------------------------------------------------------

def test_an_empty_folder_is_refused_listing_what_was_looked_for(tmp_path):
    with pytest.raises(DatasetError) as error:
        auto(tmp_path).index("train")
    message = str(error.value)
    assert f"dataset.path={tmp_path}: no dataset layout found" in message
    assert all(k in message for k in ("YOLO: a data.yaml", "COCO: a .json", "Pascal VOC: Annotations/"))
    assert "Found: an empty folder" in message


def test_a_mixed_folder_is_refused_naming_both_layouts(tmp_path):
    images = fd.sample_images(4)
    fd.write_yolo_split(tmp_path / "images" / "train", tmp_path / "labels" / "train", images)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [cat, dog, bird]\n")
    (tmp_path / "annotations.json").write_text(json.dumps(fd.coco_dict(images)))
    with pytest.raises(DatasetError, match=r"holds more than one dataset layout: yolo \(.*\); coco \(.*\)\. .*dataset=yolo"):
        auto(tmp_path).index("train")


def test_yolo_labels_without_a_data_yaml_are_explained(tmp_path):
    fd.write_yolo_split(tmp_path / "images", tmp_path / "labels", fd.sample_images(3))
    with pytest.raises(DatasetError, match=r"add a data\.yaml naming the classes"):
        auto(tmp_path).index("train")


def test_dataset_auto_without_a_path_names_the_key():
    with pytest.raises(DatasetError, match=r"dataset=auto needs dataset\.path"):
        build_format(load_config(["dataset=auto"])).index("train")


def test_every_dataset_choice_is_a_dataset_and_the_folder_ones_share_the_split_keys():
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf"
    shared = OmegaConf.load(conf / "dataset_splits" / "folder.yaml")
    for option in sorted(p.stem for p in (conf / "dataset").glob("*.yaml")):
        data = load_config([f"dataset={option}"]).dataset
        assert "_target_" in data, f"conf/dataset/{option}.yaml is a dataset= choice but builds no dataset"
        if option in ("auto", "yolo", "voc", "coco_format"):
            raw = OmegaConf.to_container(data, resolve=False)   # test_images unresolved: no folder here
            assert {k: raw[k] for k in shared} == OmegaConf.to_container(shared), option


def test_the_output_folder_is_named_after_the_dataset_folder(tmp_path):
    cfg = load_config(["dataset=auto", f"dataset.path={tmp_path / 'my_birds'}/"])
    assert cfg.output_dir == "outputs/my_birds_resnet18_narrow"


# ---- the tools take dataset=auto dataset.path= --------------------------------------------------

def test_the_doctor_and_crop_instances_take_a_folder(tmp_path, capsys):
    from detector.cli.check_dataset import main as check_dataset
    from detector.cli.crop_instances import main as crop_instances

    images = fd.sample_images()
    root = tmp_path / "shelter"
    fd.write_yolo_split(root / "train" / "images", root / "train" / "labels", images[:8])
    fd.write_yolo_split(root / "valid" / "images", root / "valid" / "labels", images[8:])
    (root / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: [cat, dog, bird]\n")
    assert check_dataset(["dataset=auto", f"dataset.path={root}"]) == 0
    assert "RESULT: clean" in capsys.readouterr().out
    assert crop_instances(["dataset=auto", f"dataset.path={root}", "--output", str(tmp_path / "crops")]) == 0
    # The crops follow the folder's splits: valid's three annotated images (four boxes) test.
    assert sum(1 for _ in (tmp_path / "crops" / "test").rglob("*.jpg")) == 4
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    assert check_dataset(["dataset=auto", f"dataset.path={empty}"]) == 1
    assert "no dataset layout found" in capsys.readouterr().err
    assert crop_instances(["dataset=auto", f"dataset.path={empty}", "--output", str(tmp_path / "c2")]) == 1
    assert "no dataset layout found" in capsys.readouterr().err


def test_the_doctor_names_a_broken_label_line_and_exits_1(tmp_path, capsys):
    from detector.cli.check_dataset import main as check_dataset

    root = tmp_path / "one_split"
    fd.write_yolo_split(root / "images", root / "labels", fd.sample_images(8))
    (root / "data.yaml").write_text("train: images\nnames: [cat, dog, bird]\n")
    assert check_dataset(["dataset=auto", f"dataset.path={root}", "--no-decode"]) == 0
    assert "RESULT: clean" in capsys.readouterr().out
    # A box with a value missing (a hand edit): the doctor names the file and the line.
    (root / "labels" / "img_03.txt").write_text("1 0.5 0.5 0.3 0.4\n0 0.5 0.5 0.2\n")
    assert check_dataset(["dataset=auto", f"dataset.path={root}", "--no-decode"]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert errors == [f"ERROR {root / 'images' / 'img_03.jpeg'}: {root / 'labels' / 'img_03.txt'} line 2: 4 values; "
                      "expected 5 ('class cx cy w h') or a polygon ('class x1 y1 x2 y2 x3 y3 ...')"]
    assert out.rstrip().endswith("RESULT: problems found")
