"""A user's own dataset format (a CSV of boxes) and an extra albumentations transform,
plugged in by config alone (hydra.searchpath + _target_): the data loads with the right
boxes and labels, evaluates against its own ground truth, and the blur is in the training
pipeline and applied."""
import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from detector.config import load_config
from detector.data import build_dataset, build_train_loader, class_names
from detector.data.coco_index import DatasetError
from detector.data.formats import build_format
from detector.data.transforms import ShortestEdgeResize, build_augmentation
from user_plugins.csv_format import CsvBoxes

# image -> [(x1, y1, x2, y2, class)], images of 80 x 64 (width x height)
TRAIN = {
    "a.png": [(8, 6, 40, 30, "dog"), (44, 20, 76, 60, "cat")],
    "b.png": [(10, 10, 30, 50, "cat")],
    "empty.png": [],
}
TEST = {"a.png": TRAIN["a.png"], "b.png": TRAIN["b.png"]}


def write_csv_dataset(root):
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for name, boxes in TRAIN.items():
        image = rng.integers(0, 60, (64, 80, 3), dtype=np.uint8)
        for x1, y1, x2, y2, _ in boxes:
            image[y1:y2, x1:x2] = 230   # sharp-edged bright boxes: a blur visibly softens them
        cv2.imwrite(str(root / "images" / name), image)
    for split, rows in (("train", TRAIN), ("test", TEST)):
        lines = ["image,x1,y1,x2,y2,class"]
        for name, boxes in rows.items():
            lines += [f"{name},{x1},{y1},{x2},{y2},{cls}" for x1, y1, x2, y2, cls in boxes] or [name]
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return [f"dataset.images={root / 'images'}", f"dataset.train={root / 'train.csv'}",
            f"dataset.test={root / 'test.csv'}"]


@pytest.fixture
def csv_cfg(searchpath, tmp_path):
    paths = write_csv_dataset(tmp_path)
    # Short side 64 and long side 80 keep the images at their size: boxes can be compared exactly.
    return lambda *overrides: load_config([searchpath, "dataset=csv_boxes", *paths, "aug.min_size=[64]",
                                           "aug.max_size=80", "dataloader.num_workers=0", "dataloader.batch_size=2",
                                           *overrides])


def test_a_user_format_loads_with_its_boxes_labels_and_ground_truth(csv_cfg):
    cfg = csv_cfg()
    assert isinstance(build_format(cfg), CsvBoxes)
    assert class_names(cfg) == ["cat", "dog"]          # found in the CSV, sorted
    assert cfg.model.num_classes == 2                  # resolved from the user's format

    test = build_dataset(cfg, "test")
    assert [r.path.rsplit("/", 1)[1] for r in test.records] == ["a.png", "b.png"]
    first = test.records[0]
    assert (first.width, first.height) == (80, 64)     # read from the image header
    assert first.boxes.tolist() == [[8, 6, 40, 30], [44, 20, 76, 60]] and first.labels.tolist() == [2, 1]
    assert test.records[1].boxes.tolist() == [[10, 10, 30, 50]] and test.records[1].labels.tolist() == [1]

    # The evaluation ground truth the COCO evaluator scores against: exact detections get AP 1,
    # the same boxes under swapped classes get AP 0.
    from detector.evaluation import detections_to_coco_results, evaluate_boxes

    def score(swap: bool):
        outputs = [{"boxes": torch.from_numpy(r.boxes), "scores": torch.ones(len(r.boxes)),
                    "labels": torch.from_numpy(3 - r.labels if swap else r.labels)} for r in test.records]
        results = detections_to_coco_results(outputs, [r.image_id for r in test.records], test.label_to_category_id)
        return evaluate_boxes(test.coco_gt(), results)["AP"]

    assert score(swap=False) == pytest.approx(1.0)
    assert score(swap=True) == pytest.approx(0.0)

    # Training drops the image without boxes (dataset.filter_empty) and yields the CSV's boxes.
    train = build_dataset(cfg, "train")
    assert len(train) == 2
    cfg_no_flip = csv_cfg("aug.train.1.p=0.0")
    batch = next(iter(build_train_loader(cfg_no_flip)))
    by_id = {r.image_id: r for r in train.records}
    for image, target in zip(batch["images"], batch["targets"]):
        assert image.shape == (3, 64, 80)
        record = by_id[target["image_id"]]
        assert target["boxes"].tolist() == record.boxes.tolist()
        assert target["labels"].tolist() == record.labels.tolist()


def test_a_user_format_reports_bad_rows_through_the_shared_checks(csv_cfg, tmp_path):
    cfg = csv_cfg()
    (tmp_path / "train.csv").write_text("a.png,8,6,400,30,dog\nb.png,10,10,30,50,cat\n")   # outside the 80 px image
    index = build_format(cfg).index("train")
    assert [p.kind for p in index.problems] == ["outside_image"]
    assert index.records[0].problem is not None and index.records[1].problem is None


def test_a_user_format_checks_its_paths_before_work(csv_cfg, searchpath, tmp_path):
    from detector.engine.config_checks import ConfigError, validate_config

    cfg = csv_cfg(f"dataset.test={tmp_path / 'missing.csv'}")
    with pytest.raises(ConfigError, match=r"dataset\.test=.*missing\.csv does not exist"):
        validate_config(cfg)
    with pytest.raises(DatasetError, match=r"dataset\.images is not set: dataset=csv_boxes needs it"):
        build_format(load_config([searchpath, "dataset=csv_boxes"])).check(["train"])


def test_an_extra_transform_from_config_is_in_the_pipeline_and_applied(csv_cfg):
    blurred_cfg, plain_cfg = csv_cfg("aug=with_blur", "aug.train.1.p=0.0"), csv_cfg("aug.train.1.p=0.0")
    pipeline = build_augmentation(blurred_cfg.aug.train)
    assert [type(t) for t in pipeline.transforms] == [ShortestEdgeResize, A.HorizontalFlip, A.Blur]
    assert pipeline.transforms[2].blur_limit == (5, 5) and pipeline.transforms[2].p == 1.0
    assert pipeline.transforms[0].max_size == [64]    # the scales still come from aug.min_size

    blurred, plain = build_dataset(blurred_cfg, "train"), build_dataset(plain_cfg, "train")
    assert isinstance(blurred.transform.transforms[2], A.Blur)
    raw = cv2.cvtColor(cv2.imread(plain.records[0].path), cv2.COLOR_BGR2RGB)
    plain_image = (plain[(0, 0)]["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    sample = blurred[(0, 0)]
    blurred_image = (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(plain_image, raw)            # the default pipeline leaves these pixels alone
    expected = cv2.blur(raw, (5, 5))                   # a 5 x 5 box blur
    assert np.abs(blurred_image.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(np.diff(blurred_image.astype(int), axis=1)).sum() < 0.6 * np.abs(np.diff(raw.astype(int), axis=1)).sum()
    assert sample["target"]["boxes"].tolist() == plain.records[0].boxes.tolist()   # a blur moves no box


def test_browse_dataset_prints_the_pipeline_from_the_command_line(csv_cfg, searchpath, tmp_path, capsys):
    """The tools take hydra.searchpath like any override: the user's format and pipeline."""
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[2] / "tools" / "browse_dataset.py"
    spec = importlib.util.spec_from_file_location("browse_dataset", tool)
    browse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(browse)
    (tmp_path / "again").mkdir()
    paths = write_csv_dataset(tmp_path / "again")
    out = tmp_path / "browse"
    assert browse.main([searchpath, "dataset=csv_boxes", "aug=with_blur", *paths, "aug.min_size=[64]",
                        "aug.max_size=80", "--output", str(out), "--num", "2"]) == 0
    printed = capsys.readouterr().out
    assert "aug.train[2]: albumentations.Blur(blur_limit=[5, 5], p=1.0)" in printed
    assert "aug.train[0]: detector.data.transforms.ShortestEdgeResize(min_sizes=[64], max_size=80)" in printed
    assert len(list(out.glob("*.jpg"))) == 2
