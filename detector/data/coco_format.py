"""COCO-format datasets (an images folder plus a JSON file per split) and the generated
shapes, which are written as COCO files on first use (detector/data/shapes.py)."""
from __future__ import annotations

from typing import Sequence

from detector.data.coco_files import clear_json_cache, load_json  # noqa: F401 - importable from here, as before
from detector.data.coco_index import DatasetError, DatasetIndex, check_coco_structure, index_coco
from detector.data.formats import DatasetFormat, check_split


class CocoFormat(DatasetFormat):
    """`train` and `test`: {images: folder, annotations: COCO JSON file} each.

    root: the folder the paths are usually written relative to (descriptive);
    missing_hint: told when a path does not exist (e.g. where to download the data)."""

    def __init__(self, *, train: dict, test: dict, root: str | None = None, missing_hint: str | None = None,
                 path: str | None = None, test_fraction: float | None = None, split_seed: int | None = None,
                 test_images=None, **common):
        super().__init__(**common)
        self.splits = {"train": dict(train), "test": dict(test)}
        self.root = root
        if missing_hint:
            self.missing_hint = str(missing_hint)
        self.path = None if path in (None, "???") else str(path)
        self.folder_keys = {"test_fraction": test_fraction, "split_seed": split_seed, "test_images": test_images}
        self.common = common
        if self.path is not None:
            given = [f"dataset.{s}.{p}" for s in self.splits for p in ("images", "annotations")
                     if self.splits[s][p] not in (None, "???")]
            if given:
                raise DatasetError(f"dataset={self.name}: dataset.path={self.path} and {', '.join(given)} are both set; "
                                   "give the export's folder (dataset.path) or the four paths, not both")

    def folder_format(self):
        """With dataset.path: the reading of dataset=auto restricted to COCO (detector/data/folder_format.py)."""
        from detector.data.folder_format import FolderFormat

        if self.path is None:
            return None
        unset = [k for k in ("test_fraction", "split_seed") if self.folder_keys[k] is None]
        if unset:
            raise DatasetError(f"dataset={self.name}: dataset.path needs dataset.{unset[0]} "
                               "(conf/dataset_splits/folder.yaml has it; add it to the defaults list of your "
                               "dataset config)")
        return FolderFormat(path=self.path, layout="coco", use_difficult=False, **self.folder_keys, **self.common)

    def paths(self, split: str) -> tuple[str, str]:
        """(images folder, annotation file) of `split`, checked to exist."""
        check_split(split)
        node = self.splits[split]
        if any(node[part] is None or node[part] == "???" for part in ("images", "annotations")):
            raise DatasetError(f"dataset={self.name}: set dataset.{split}.images and dataset.{split}.annotations "
                               f"(e.g. dataset.{split}.images=/data/imgs dataset.{split}.annotations=/data/{split}.json)")
        images = self.require_path(f"dataset.{split}.images", node["images"], folder=True)
        annotations = self.require_path(f"dataset.{split}.annotations", node["annotations"], folder=False)
        return images, annotations

    def index(self, split: str) -> DatasetIndex:
        if self.path is not None:
            return self.folder_format().index(split)
        images, annotations = self.paths(split)
        return index_coco(load_json(annotations), images, annotations, self.classes)

    def class_names(self) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        if self.path is not None:
            return self.folder_format().class_names()
        annotations = self.paths("train")[1]
        coco = load_json(annotations)
        check_coco_structure(coco, annotations)
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        return [str(c.get("name", c["id"])) for c in categories]

    def has_masks(self) -> bool:
        """True when some training annotation has a segmentation (polygons or RLE); a file
        whose annotations only carry boxes (or "segmentation": []) has none. Reads the
        (cached) JSON without indexing it: usually the first annotation answers."""
        if self.path is not None:
            return self.folder_format().has_masks()
        annotations = self.paths("train")[1]
        coco = load_json(annotations)
        check_coco_structure(coco, annotations)
        return any(isinstance(ann, dict) and ann.get("segmentation") and not ann.get("iscrowd", 0)
                   for ann in coco.get("annotations", []))

    def check(self, splits: Sequence[str]) -> None:
        if self.path is not None:
            self.check_exists("dataset.path", self.path)
            return
        for split in splits:
            for part in ("images", "annotations"):
                self.check_exists(f"dataset.{split}.{part}", self.splits[split][part])


class ShapesFormat(CocoFormat):
    """The generated shapes (COCO files under `root`), written on first use from the
    generator settings (their meaning: conf/dataset/shapes.yaml, detector/data/shapes.py)."""

    def __init__(self, *, root: str, seed: int, num_train: int, num_test: int, image_size: int,
                 objects_per_image: Sequence[int], object_size: Sequence[float], size_distribution: str,
                 max_occlusion: float, distractors_per_image: Sequence[int], min_contrast: float, noise_std: float,
                 jpeg_quality: int, train: dict, test: dict, **common):
        super().__init__(train=train, test=test, root=root, **common)
        self.generator = {
            "root": root, "classes": self.classes, "seed": seed, "num_train": num_train, "num_test": num_test,
            "image_size": image_size, "objects_per_image": list(objects_per_image), "object_size": list(object_size),
            "size_distribution": size_distribution, "max_occlusion": max_occlusion,
            "distractors_per_image": list(distractors_per_image), "min_contrast": min_contrast,
            "noise_std": noise_std, "jpeg_quality": jpeg_quality,
        }

    def generate(self) -> str:
        from detector.data.shapes import ensure_shapes_dataset

        return ensure_shapes_dataset(self.generator)

    def index(self, split: str) -> DatasetIndex:
        check_split(split)
        self.generate()
        return super().index(split)

    def class_names(self) -> list[str]:
        if self.classes is None:
            self.generate()
        return super().class_names()

    def has_masks(self) -> bool:
        self.generate()   # the generator writes every object's visible region
        return super().has_masks()

    def check(self, splits: Sequence[str]) -> None:
        # The files are written on first use; only the generator settings can be wrong now.
        from detector.data.shapes import generator_params

        try:
            generator_params(self.generator)
        except ValueError as error:
            raise DatasetError(str(error)) from None
