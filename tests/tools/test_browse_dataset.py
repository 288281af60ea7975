"""tools/browse_dataset.py with `dataset=auto dataset.path=DIR`: the training images of a folder
as the model is fed them (never the carved test images), ground-truth boxes drawn; a folder
that fits no layout is one message and exit 1."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from detector.config import load_config
from detector.data.formats import build_format

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("folder_datasets", REPO / "tests" / "data" / "folder_datasets.py")
fd = importlib.util.module_from_spec(_spec)
sys.modules["folder_datasets"] = fd   # its dataclasses look their module up
_spec.loader.exec_module(fd)
_tool = importlib.util.spec_from_file_location("browse_dataset_tool", REPO / "tools" / "browse_dataset.py")
browse_dataset = importlib.util.module_from_spec(_tool)
_tool.loader.exec_module(browse_dataset)


def browse(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = browse_dataset.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_browsing_a_folder_shows_its_training_images_with_their_boxes(tmp_path):
    images = fd.sample_images(12)
    root = tmp_path / "my_pets"
    fd.write_yolo_split(root / "images", root / "labels", images)
    (root / "data.yaml").write_text("train: images\nnames: [cat, dog, bird]\n")
    overrides = ["dataset=auto", f"dataset.path={root}", "aug.min_size=[64]", "aug.max_size=96"]
    cfg = load_config(overrides)
    test_names = {str(root / name) for name in cfg.dataset.test_images}
    fmt = build_format(cfg)
    by_id = {r.image_id: r for split in ("train", "test") for r in fmt.index(split).records}
    assert len(by_id) == 12 and len(test_names) == 2

    out = tmp_path / "browse"
    code, printed, errors = browse(*overrides, "--output", out, "--num", 12)
    assert code == 0, errors
    assert f"wrote 12 images to {out}" in printed
    pictures = sorted(out.glob("*.jpg"))
    assert len(pictures) == 12
    shown = [int(re.fullmatch(r"\d{4}_image(\d+)\.jpg", p.name).group(1)) for p in pictures]
    assert not {by_id[i].path for i in shown} & test_names   # the carved test images never train
    for picture, image_id in zip(pictures, shown):
        pixels = np.asarray(Image.open(picture).convert("RGB")).astype(int)
        # Each sample image is one flat colour: anything far from it is a drawn box or caption.
        background = np.median(pixels.reshape(-1, 3), axis=0)
        drawn = (np.abs(pixels - background).max(axis=2) > 60).mean()
        if len(by_id[image_id].boxes):
            assert drawn > 0.01, (picture.name, drawn)
        else:
            assert drawn == 0, (picture.name, drawn)


def test_browsing_a_folder_of_no_layout_is_one_message(tmp_path):
    code, _, errors = browse("dataset=auto", f"dataset.path={tmp_path}", "--output", tmp_path / "out")
    assert code == 1
    assert errors.startswith(f"error: dataset.path={tmp_path}: no dataset layout found. Looked for:")
    assert "Traceback" not in errors
