"""Config errors through the real tools/train_net.py: a typo in a key or a group option lists
the valid choices; invalid values, a missing dataset and an unwritable output_dir stop the
run before any work (no output folder, no checkpoint, not even the generated dataset).

tests/tools/test_train_net.py already checks the messages of negative lr, batch 0 and
min size above max size in-process, and a missing dataset / an output_dir under a file
through the tool; here the same kinds of mistakes are checked for doing no work at all (a
negative lr goes through the same check as batch 0, so it is not started again here).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from reliability_helpers import assert_clean_failure, observe, tiny, train_net

BACKBONES = ["resnet101", "resnet152", "resnet18", "resnet18_narrow", "resnet34", "resnet50", "resnext101_32x8d",
             "resnext50_32x4d"]


def test_typo_in_a_key_names_the_valid_keys_and_the_likely_one(tmp_path):
    proc = train_net([f"output_dir={tmp_path / 'out'}", "train.max_itr=5"], check=False, timeout=120)
    stderr = assert_clean_failure(proc, "train.max_itr", "Did you mean 'train.max_iter'?")
    hint = next(line for line in stderr.splitlines() if line.startswith("Unknown key"))
    observe("config: typo train.max_itr=5", stderr.splitlines()[0] + "\n" + hint, "nothing: exit 1, nothing created")
    for key in ("max_iter", "checkpoint_period", "resume", "device", "amp"):
        assert key in hint, key
    assert not (tmp_path / "out").exists()


def test_unknown_group_option_lists_the_valid_options(tmp_path):
    proc = train_net([f"output_dir={tmp_path / 'out'}", "backbone=resnet5"], check=False, timeout=120)
    stderr = assert_clean_failure(proc, "Could not find 'backbone/resnet5'", "Available options in 'backbone'")
    for name in BACKBONES:
        assert f"\t{name}\n" in stderr, name
    observe("config: backbone=resnet5", " ".join(stderr.split("Config search path")[0].split()),
            "nothing: exit 1, nothing created")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override,expected", [
    ("dataloader.batch_size=0", "dataloader.batch_size=0 must be a number > 0"),
    ("aug.min_size=[300]", "no min_size larger than max_size"),
])
def test_invalid_values_stop_before_any_work(override, expected, tmp_path):
    out, data = tmp_path / "out", tmp_path / "shapes"
    start = time.monotonic()
    proc = train_net(tiny(data, out, "train.max_iter=4", override), check=False, timeout=120)
    elapsed = time.monotonic() - start
    stderr = assert_clean_failure(proc, expected)
    assert not out.exists() and not data.exists()  # no output folder, no dataset generated
    observe(f"config: {override}", stderr.strip().splitlines()[-1], "nothing: exit 1 before any work")
    assert "iter:" not in proc.stdout and elapsed < 60


def test_missing_dataset_path_stops_before_any_work(tmp_path):
    out = tmp_path / "out"
    proc = train_net([f"output_dir={out}", "dataset=coco_format", f"dataset.train.images={tmp_path / 'imgs'}",
                      f"dataset.train.annotations={tmp_path / 'train.json'}", f"dataset.test.images={tmp_path / 'imgs'}",
                      f"dataset.test.annotations={tmp_path / 'test.json'}"], check=False, timeout=120)
    stderr = assert_clean_failure(proc, f"dataset.train.images={tmp_path / 'imgs'} does not exist", "datasets/README.md")
    observe("config: missing dataset path", stderr.strip().splitlines()[-1], "nothing: exit 1 before any work")
    assert not out.exists()


def test_unwritable_output_dir_fails_at_once(tmp_path):
    """An output_dir that cannot be created: its parent is a regular file. No permission bits
    involved, so it fails the same way for root (how CI runs) as for any other account."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    data = tmp_path / "shapes"
    start = time.monotonic()
    proc = train_net(tiny(data, blocker / "out", "train.max_iter=4"), check=False, timeout=120)
    elapsed = time.monotonic() - start
    stderr = assert_clean_failure(proc, f"output_dir={str(blocker / 'out')!r} is not writable", "Not a directory",
                                  "Pick another with output_dir=")
    observe("config: output_dir under a regular file", stderr.strip().splitlines()[-1],
            "nothing: exit 1 before any work")
    assert blocker.read_text() == "not a folder"   # the file in the way is left alone
    assert not data.exists()   # no dataset generated
    assert "iter:" not in proc.stdout and elapsed < 60


def test_output_dir_on_a_read_only_path_fails_at_once_even_as_root(tmp_path):
    """/proc is read-only for everyone, root included: the same check, on any account."""
    data = tmp_path / "shapes"
    proc = train_net(tiny(data, Path("/proc/detector_out"), "train.max_iter=4"), check=False, timeout=120)
    stderr = assert_clean_failure(proc, "output_dir='/proc/detector_out' is not writable")
    observe("config: unwritable output_dir (/proc/..., read-only even for root)", stderr.strip().splitlines()[-1],
            "nothing: exit 1 before any work")
    assert not data.exists()
