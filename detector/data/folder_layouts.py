"""The dataset layouts a folder can hold, each able to index its own splits.

A Layout knows its split names as the folder spells them (train, valid, test, trainval, ...),
its class names, and how to turn one split into a DatasetIndex through the checks every format
shares. Which layout a folder holds is found by layout_detection.py; which split trains and
which tests by split_carving.py.
"""
from __future__ import annotations

import os

from detector.data.coco_index import BAD_IMAGE, DatasetIndex, Problem, index_coco


class Layout:
    kind = "layout"          # coco | voc | yolo: the dataset= option that names it

    def __init__(self, root: str, description: str):
        self.root = root
        self.description = description
        self.notes: list[str] = []   # what reading the folder decided (e.g. a dropped root category), logged

    def split_names(self) -> list[str]:
        raise NotImplementedError

    def class_names(self) -> list[str]:
        raise NotImplementedError

    def index(self, split: str, classes: list[str], use_difficult: bool) -> DatasetIndex:
        raise NotImplementedError

    def may_have_masks(self) -> bool:
        """False when the layout cannot hold masks (VOC boxes), so nothing needs reading."""
        return True


class YoloLayout(Layout):
    """A data.yaml and its label files (detector/data/yolo.py)."""

    kind = "yolo"

    def __init__(self, root: str, yaml_path: str):
        from detector.data.yolo import read_data_yaml

        super().__init__(root, f"YOLO labels described by {yaml_path}")
        self.spec = read_data_yaml(yaml_path)

    def split_names(self) -> list[str]:
        return list(self.spec.splits)

    def class_names(self) -> list[str]:
        return list(self.spec.names)

    def index(self, split, classes, use_difficult):
        from detector.data.formats import index_image_boxes
        from detector.data.yolo import yolo_image_boxes

        images, line_problems = yolo_image_boxes(self.spec.splits[split], self.spec.names, self.spec.keypoint_shape)
        index = index_image_boxes(images, self.spec.yaml_path, classes, self.spec.keypoint_names, self.spec.flip_idx)
        # A line that cannot be read leaves the image's labels incomplete: a bad sample.
        by_path = {r.path: r for r in index.records}
        for path, reason in line_problems:
            by_path[path].problem = by_path[path].problem or reason
        index.problems[:0] = [Problem(path, reason, "bad_label_line", BAD_IMAGE) for path, reason in line_problems]
        return index


class CocoLayout(Layout):
    """COCO JSON files, one per split, each with a list of folders its images may be in."""

    kind = "coco"

    def __init__(self, root: str, files: dict[str, tuple[str, list[str]]], description: str):
        super().__init__(root, description)
        self.files = files   # split -> (json path, candidate image folders)

    def split_names(self) -> list[str]:
        return list(self.files)

    def _coco(self, split: str) -> tuple[dict, str]:
        from detector.data.coco_files import drop_root_category, find_images_dir, load_json
        from detector.data.coco_index import check_coco_structure

        path, candidates = self.files[split]
        coco = load_json(path)
        check_coco_structure(coco, path)
        coco, root_name = drop_root_category(coco)
        if root_name is not None:
            note = (f"category {root_name!r} of {os.path.basename(path)} is dropped: no annotation uses it and it is "
                    "the supercategory of the others (the dataset's name, as Roboflow writes it)")
            if note not in self.notes:
                self.notes.append(note)
        folder, coco = find_images_dir(coco, candidates, path)
        return coco, folder

    def class_names(self) -> list[str]:
        coco, _ = self._coco(self._train_split())
        return [str(c.get("name", c["id"])) for c in sorted(coco["categories"], key=lambda c: c["id"])]

    def _train_split(self) -> str:
        from detector.data.split_carving import plan_splits

        return plan_splits(self.split_names(), self.root).train

    def index(self, split, classes, use_difficult):
        coco, folder = self._coco(split)
        return index_coco(coco, folder, self.files[split][0], classes)


class VocStandardLayout(Layout):
    """ROOT/Annotations, ROOT/JPEGImages and the split files of ROOT/ImageSets/Main."""

    kind = "voc"

    def __init__(self, root: str):
        super().__init__(root, f"Pascal VOC folder {root} (Annotations/, JPEGImages/, ImageSets/Main/)")

    def split_names(self) -> list[str]:
        from detector.data.voc_xml import standard_split_names

        return standard_split_names(self.root)

    def class_names(self) -> list[str]:
        from detector.data.voc_xml import discover_classes

        return discover_classes(self.root)

    def index(self, split, classes, use_difficult):
        from detector.data.voc_xml import index_voc

        return index_voc(self.root, split, classes, use_difficult)

    def may_have_masks(self) -> bool:
        return False


class VocFlatLayout(Layout):
    """VOC XML files without split files: per split, the folders of its XML files and of its
    images (the same folder when they lie side by side)."""

    kind = "voc"

    def __init__(self, root: str, splits: dict[str, tuple[list[str], list[str]]], description: str):
        super().__init__(root, description)
        self.splits = splits   # split -> (xml folders, image folders)

    def split_names(self) -> list[str]:
        return list(self.splits)

    def xml_files(self, split: str) -> list[str]:
        from detector.data.voc_xml import is_voc_xml

        folders = self.splits[split][0]
        return [os.path.join(d, f) for d in folders for f in sorted(os.listdir(d))
                if f.lower().endswith(".xml") and is_voc_xml(os.path.join(d, f))]

    def class_names(self) -> list[str]:
        from detector.data.voc_xml import xml_object_names

        return xml_object_names([x for split in self.splits for x in self.xml_files(split)])

    def index(self, split, classes, use_difficult):
        from detector.data.voc_xml import index_pairs, pair_xml_with_images

        pairs, missing = pair_xml_with_images(self.xml_files(split), self.splits[split][1])
        return index_pairs(pairs, missing, classes, use_difficult, self.root)

    def may_have_masks(self) -> bool:
        return False
