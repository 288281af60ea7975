"""Bad samples in training: skipped with a warning naming the file (skip), or a clear error (error)."""
import importlib.util
import itertools
from pathlib import Path

import pytest

from detector.config import load_config
from detector.data import BadSampleError, BadSampleWarning, build_dataset, build_train_loader

_spec = importlib.util.spec_from_file_location("corrupt_copy", Path(__file__).with_name("corrupt_copy.py"))
corrupt_copy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corrupt_copy)


def _cfg(folder, *overrides):
    paths = [f"dataset.{split}.{key}={folder / name}" for split in ("train", "test")
             for key, name in (("images", "images"), ("annotations", "annotations.json"))]
    return load_config(["dataset=coco_format", *paths, "aug.min_size=[128]", "aug.max_size=192",
                        "dataloader.num_workers=0", "dataloader.batch_size=4", *overrides])


def test_skip_policy_replaces_bad_samples_and_reports_them(coco128, tmp_path):
    damaged = corrupt_copy.make_corrupt_copy(coco128, tmp_path)
    with pytest.warns(BadSampleWarning) as caught:
        loader = build_train_loader(_cfg(tmp_path))
        batches = list(itertools.islice(iter(loader), 12))  # 48 samples: every image several times
    warned = " ".join(str(w.message) for w in caught)
    skipped = " ".join(m for b in batches for m in b["skipped"])
    for defect, file_name in damaged.items():
        assert file_name in warned, defect
        assert file_name in skipped, defect
    bad_ids = {r.image_id for r in loader.dataset.records if Path(r.path).name in damaged.values()}
    for batch in batches:
        assert len(batch["images"]) == 4  # replaced, not dropped
        assert not {t["image_id"] for t in batch["targets"]} & bad_ids
        for target in batch["targets"]:
            assert not target["boxes"].isnan().any()


def test_error_policy_names_the_file_and_reason(coco128, tmp_path):
    damaged = corrupt_copy.make_corrupt_copy(coco128, tmp_path)
    with pytest.raises(BadSampleError) as error:  # annotation problems: found when the dataset is built
        build_dataset(_cfg(tmp_path, "dataset.on_bad_sample=error"), "train")
    for defect in ("nan_box", "negative_width", "unknown_category"):
        assert damaged[defect] in str(error.value)
    # Image problems are found when the image is loaded.
    cfg = _cfg(tmp_path, "dataset.on_bad_sample=error")
    with pytest.warns(BadSampleWarning):
        dataset = build_dataset(_cfg(tmp_path), "train")
    dataset.on_bad_sample = "error"
    index = next(i for i, r in enumerate(dataset.records) if Path(r.path).name == damaged["truncated"])
    with pytest.raises(BadSampleError, match=f"{damaged['truncated']}: unreadable or corrupt"):
        dataset[(index, 0)]
    assert cfg.dataset.on_bad_sample == "error"


def test_test_loader_reports_unreadable_images_and_goes_on(coco128, tmp_path):
    from detector.data import build_test_loader

    damaged = corrupt_copy.make_corrupt_copy(coco128, tmp_path)
    with pytest.warns(BadSampleWarning):
        batches = list(build_test_loader(_cfg(tmp_path)))
    seen = [name for b in batches for name in b["file_names"]]
    skipped = " ".join(m for b in batches for m in b["skipped"])
    assert len(seen) == 10 - 2
    assert damaged["truncated"] in skipped and damaged["missing"] in skipped
