"""Hostile annotation files, built in tmp_path: each gives a message naming the file and the
reason, from tools/check_dataset.py (exit 1) and from training -- refused up front when the
file is structurally unusable, otherwise the image skipped (dataset.on_bad_sample=skip) or
refused (=error). No library traceback, and no NaN reaches a loss."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reliability_helpers import TOOLS, assert_clean_failure, observe, run_tool, tiny_coco, train_net

_spec = importlib.util.spec_from_file_location("check_dataset_tool", TOOLS / "check_dataset.py")
check_dataset = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_dataset)

NAMES = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def clean_coco() -> dict:
    return {
        "images": [{"id": i, "file_name": name, "width": 64, "height": 48} for i, name in enumerate(NAMES, start=1)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [8, 8, 30, 20], "area": 600,
                         "iscrowd": 0} for i in range(1, len(NAMES) + 1)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _set_bbox(value):
    def edit(coco):
        coco["annotations"][0]["bbox"] = value
    return edit


def _drop(where: str, key: str):
    def edit(coco):
        if where == "top":
            del coco[key]
        else:
            del coco[where][0][key]
    return edit


def _duplicate_image_id(coco):
    coco["images"][1]["id"] = coco["images"][0]["id"]


def _orphan(coco):
    coco["annotations"].append({"id": 99, "image_id": 424242, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0})


def _unknown_category(coco):
    coco["annotations"][0]["category_id"] = 7


# name -> (edit of the clean dict or raw file text, kind, text the message must hold)
# kind: "structural" (refused up front), "image" (that image is a bad sample),
#       "orphan" (an annotation of no image: warned under skip, refused under error)
VARIANTS = {
    "not_json": ("this is { not JSON", "structural", "not valid JSON"),
    "not_coco": ("[1, 2, 3]", "structural", "not a COCO annotation file"),
    "other_json": ('{"name": "my settings", "version": 3}', "structural", "not a COCO annotation file"),
    "no_categories": (_drop("top", "categories"), "structural", "no 'categories' list"),
    "image_without_file_name": (_drop("images", "file_name"), "structural", "lacks 'id' or 'file_name'"),
    "duplicate_image_id": (_duplicate_image_id, "structural", "duplicate image id 1"),
    "annotation_without_bbox": (_drop("annotations", "bbox"), "image", "is not a list of 4 numbers"),
    "annotation_without_category": (_drop("annotations", "category_id"), "image", "unknown category id None"),
    "unknown_category": (_unknown_category, "image", "unknown category id 7"),
    "nan_box": (_set_bbox([8, 8, float("nan"), 20]), "image", "holds NaN or infinity"),
    "inf_box": (_set_bbox([8, 8, float("inf"), 20]), "image", "holds NaN or infinity"),
    "negative_size": (_set_bbox([8, 8, -30, 20]), "image", "negative width or height"),
    "string_box": (_set_bbox(["8", "8", "30", "20"]), "image", "holds non-numeric values"),
    "orphan_annotation": (_orphan, "orphan", "points at image id 424242, which is not in 'images'"),
}


def build(folder: Path, variant: str) -> tuple[Path, Path]:
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(NAMES):
        pixels = np.full((48, 64, 3), 40 * index, np.uint8)
        pixels[8:28, 8:38] = (220, 30, 30)
        Image.fromarray(pixels).save(images / name, quality=95)
    edit = VARIANTS[variant][0]
    path = folder / f"{variant}.json"
    if isinstance(edit, str):
        path.write_text(edit)
    else:
        coco = clean_coco()
        edit(coco)
        path.write_text(json.dumps(coco))  # NaN / Infinity written as Python's json writes them
    return images, path


def _check_dataset(*args) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = check_dataset.main([str(a) for a in args])
    return code, out.getvalue() + err.getvalue()


def _cfg(images: Path, annotations: Path, *extra: str):
    from detector.config import load_config

    return load_config(tiny_coco(images, annotations, images.parent / "out", *extra)[1:])


def _first_image(images: Path) -> str:
    return str(images / NAMES[0])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_check_dataset_names_the_file_and_the_reason(variant, tmp_path):
    images, annotations = build(tmp_path, variant)
    code, text = _check_dataset("--images", images, "--annotations", annotations)
    assert code == 1, text
    kind, reason = VARIANTS[variant][1:]
    culprit = _first_image(images) if kind == "image" else str(annotations)
    lines = [line for line in text.splitlines() if reason in line]
    assert lines and all(culprit in line for line in lines), (culprit, text)
    assert all(line.startswith(("ERROR ", "error: ")) for line in lines)
    observe(f"JSON: {variant.replace('_', ' ')} (check_dataset.py)", lines[0], "nothing: exit 1, reported")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_refuses_or_skips_with_the_reason(variant, tmp_path):
    from detector.data import BadSampleError, BadSampleWarning, DatasetError, build_dataset, build_train_loader

    images, annotations = build(tmp_path, variant)
    kind, reason = VARIANTS[variant][1:]
    culprit = _first_image(images) if kind == "image" else str(annotations)
    if kind == "structural":
        for policy in ("skip", "error"):  # whatever the policy, nothing can be trained from it
            with pytest.raises(DatasetError) as error:
                build_dataset(_cfg(images, annotations, f"dataset.on_bad_sample={policy}"), "train")
            assert culprit in str(error.value) and reason in str(error.value)
        observe(f"JSON: {variant.replace('_', ' ')} (training)", f"DatasetError: {error.value}",
                "refused up front under skip and error: nothing trained, nothing written")
        return
    with pytest.raises(BadSampleError) as error:
        build_dataset(_cfg(images, annotations, "dataset.on_bad_sample=error"), "train")
    assert f"{culprit}: " in str(error.value) and reason in str(error.value)
    assert "dataset.on_bad_sample=skip" in str(error.value)  # what to do about it
    with pytest.warns(BadSampleWarning) as caught:
        loader = build_train_loader(_cfg(images, annotations))
        batches = list(itertools.islice(iter(loader), 6))
    assert any(culprit in str(w.message) and reason in str(w.message) for w in caught)
    observe(f"JSON: {variant.replace('_', ' ')} (training)",
            "skip: " + next(str(w.message) for w in caught if culprit in str(w.message)) + "\nerror: " + str(error.value),
            "skip: that image (or annotation) only; error: refused up front")
    used = {t["image_id"] for b in batches for t in b["targets"]}
    assert used == ({2, 3, 4} if kind == "image" else {1, 2, 3, 4})
    for batch in batches:
        for target in batch["targets"]:
            assert torch.isfinite(target["boxes"]).all() and (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()


def test_a_training_step_next_to_a_skipped_nan_box_has_a_finite_loss(tmp_path):
    from detector import build_model
    from detector.data import build_train_loader

    images, annotations = build(tmp_path, "nan_box")
    cfg = _cfg(images, annotations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = next(iter(build_train_loader(cfg)))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = model(batch["images"], [{"boxes": t["boxes"], "labels": t["labels"]} for t in batch["targets"]])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(math.isfinite(v.item()) for v in losses.values()), losses
    observe("training step next to a skipped NaN box", ", ".join(f"{k}={v.item():.4f}" for k, v in sorted(losses.items())),
            "nothing: all four losses and every gradient finite")
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_train_net_refuses_a_structurally_broken_file_before_any_work(tmp_path):
    images, annotations = build(tmp_path, "not_coco")
    out = tmp_path / "out"
    proc = train_net(tiny_coco(images, annotations, out, "train.max_iter=2"), check=False)
    observe("JSON not COCO, through train_net.py", assert_clean_failure(proc, str(annotations), "not a COCO annotation file"),
            "nothing: exit 1 before any work, no checkpoints folder")
    assert not (out / "checkpoints").exists()
    checker = run_tool(TOOLS / "check_dataset.py", ["--images", images, "--annotations", annotations])
    assert_clean_failure(checker, str(annotations), "not a COCO annotation file")
