"""Hostile image files, built in tmp_path: each is either used correctly (16-bit, RGBA,
CMYK, EXIF-rotated) or refused with a message naming the file and the reason (truncated,
zero bytes, decompression bomb) -- by tools/check_dataset.py and by training alike.

EXIF convention (detector/data/image_io.py): images are used in the orientation a person
sees, and the COCO entry's width/height decide what the boxes refer to. If they equal the
displayed (rotated) size, the rotation is applied; if they equal the stored pixel size
(what most COCO exporters write), the boxes refer to the stored pixels and the image is
used unrotated. Either way boxes and pixels agree.
"""
from __future__ import annotations

import itertools
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from reliability_helpers import TOOLS, assert_clean_failure, observe, run_tool, tiny_coco, train_net

RED, BLUE = (230, 20, 20), (20, 20, 230)
# file -> the reason check_dataset and training give (None: the file is handled)
EXPECTED = {
    "good.jpg": None,
    "gray16.png": None,
    "rgba.png": None,
    "cmyk.jpg": None,
    "exif_rotated.jpg": None,
    "truncated.jpg": "unreadable or corrupt image",
    "empty.jpg": "unreadable or corrupt image",
    "bomb.png": "refused as a possible decompression bomb",
}
BAD = [name for name, reason in EXPECTED.items() if reason]


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and header declaring width x height, and almost no pixel data:
    a few hundred bytes that a decoder would try to expand to width * height * 3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (width * 3 + 1) * 4)  # four rows of 30000 black pixels
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def two_colour(width: int, height: int) -> np.ndarray:
    """Left half RED, right half BLUE (stored pixels)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return pixels


def build_corpus(folder: Path, exif_json_size: str = "displayed") -> tuple[Path, Path]:
    """folder/images with one file of each kind and folder/annotations.json (one box each)."""
    images = folder / "images"
    images.mkdir(parents=True)
    entries = {}
    Image.fromarray(two_colour(64, 48)).save(images / "good.jpg", quality=95)
    entries["good.jpg"] = (64, 48)
    gray = np.full((48, 64), 65535, np.uint16)
    gray[:, 32:] = 32768
    Image.fromarray(gray).save(images / "gray16.png")
    entries["gray16.png"] = (64, 48)
    rgba = np.dstack([two_colour(64, 48), np.full((48, 64), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(images / "rgba.png")
    entries["rgba.png"] = (64, 48)
    Image.fromarray(two_colour(64, 48)).convert("CMYK").save(images / "cmyk.jpg", quality=95)
    entries["cmyk.jpg"] = (64, 48)
    # Stored 64 wide x 32 high, left half red; EXIF 6 = displayed after a 90 degree
    # clockwise turn: 32 wide x 64 high, red on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(two_colour(64, 32)).save(images / "exif_rotated.jpg", quality=95, exif=exif)
    entries["exif_rotated.jpg"] = (32, 64) if exif_json_size == "displayed" else (64, 32)
    full = (images / "good.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(full[: len(full) // 2])
    entries["truncated.jpg"] = (64, 48)
    (images / "empty.jpg").write_bytes(b"")
    entries["empty.jpg"] = (64, 48)
    png_header_only(images / "bomb.png", 30000, 30000)
    entries["bomb.png"] = (30000, 30000)
    assert (images / "bomb.png").stat().st_size < 2000

    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "red"}]}
    for image_id, (name, (width, height)) in enumerate(entries.items(), start=1):
        coco["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
        # The red region: the left half, or for the displayed EXIF image the top half.
        box = [0, 0, width // 2, height] if name != "exif_rotated.jpg" or exif_json_size != "displayed" else [0, 0, 32, 32]
        coco["annotations"].append({"id": image_id, "image_id": image_id, "category_id": 1, "bbox": box,
                                    "area": box[2] * box[3], "iscrowd": 0})
    annotations = folder / "annotations.json"
    annotations.write_text(json.dumps(coco))
    return images, annotations


@pytest.fixture
def corpus(tmp_path):
    return build_corpus(tmp_path)


def test_check_dataset_names_each_bad_image_and_its_reason(corpus):
    images, annotations = corpus
    proc = run_tool(TOOLS / "check_dataset.py", ["--images", images, "--annotations", annotations])
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    for name, reason in EXPECTED.items():
        mine = [line for line in errors if f"/{name}:" in line]
        if reason is None:
            assert not mine, mine  # handled files are not problems
            observe(f"image: {name}", "check_dataset.py: no error (the file is used)", "nothing")
        else:
            assert len(mine) == 1 and reason in mine[0], (name, errors)
            observe(f"image: {name} (check_dataset.py)", mine[0], "nothing: exit 1, reported")
    bomb = next(line for line in errors if "bomb.png" in line)
    assert "900000000 pixels" in bomb and "dataset.max_image_pixels" in bomb


def test_the_bomb_is_refused_from_its_header_and_never_decoded(corpus, monkeypatch):
    from detector.data.image_io import BadImageError, read_image_rgb

    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.filename) or real_load(self))
    images, _ = corpus
    with pytest.raises(BadImageError) as error:
        read_image_rgb(str(images / "bomb.png"), (30000, 30000))
    assert "bomb.png" in str(error.value) and "decompression bomb" in error.value.reason
    assert not [f for f in decoded if "bomb" in str(f)]
    read_image_rgb(str(images / "good.jpg"))
    assert decoded  # the spy does see ordinary decodes


def test_handled_formats_decode_to_the_right_rgb(corpus):
    from detector.data.image_io import read_image_rgb

    images, _ = corpus
    gray = read_image_rgb(str(images / "gray16.png"), (64, 48))
    assert gray.shape == (48, 64, 3) and gray.dtype == np.uint8
    assert (gray[:, :32] == 255).all() and (gray[:, 32:] == 128).all()  # scaled from 16 bits, not clipped
    for name in ("rgba.png", "cmyk.jpg"):
        rgb = read_image_rgb(str(images / name), (64, 48)).astype(int)
        assert rgb.shape == (48, 64, 3)
        assert np.abs(rgb[10:38, 4:28] - RED).max() < 40 and np.abs(rgb[10:38, 36:60] - BLUE).max() < 40, name


@pytest.mark.parametrize("convention", ["displayed", "stored"])
def test_exif_rotated_image_boxes_match_the_pixels(convention, tmp_path):
    """Whichever size the JSON gives, the training sample's box covers the red pixels."""
    from detector.config import load_config
    from detector.data import build_dataset

    images, annotations = build_corpus(tmp_path, exif_json_size=convention)
    cfg = load_config(tiny_coco(images, annotations, tmp_path / "out", "aug.min_size=[32]",
                                "aug.max_size=64", "aug.train.1.p=0.0")[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = build_dataset(cfg, "train")
    index = next(i for i, r in enumerate(dataset.records) if r.path.endswith("exif_rotated.jpg"))
    sample = dataset[(index, 0)]
    image, box = sample["image"], sample["target"]["boxes"][0]
    height, width = image.shape[1:]
    assert (width, height) == ((32, 64) if convention == "displayed" else (64, 32))
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    inside = image[:, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].mean(dim=(1, 2)) * 255
    assert abs(float(inside[0]) - RED[0]) < 30 and abs(float(inside[2]) - RED[2]) < 30, inside
    observe(f"image: EXIF-rotated JPEG, JSON size = {convention} size", f"no message; image used {width}x{height}, "
            "box on the object", "nothing")


def test_training_skips_bad_images_naming_them_and_uses_the_rest(corpus):
    from detector.config import load_config
    from detector.data import BadSampleWarning, build_train_loader

    images, annotations = corpus
    cfg = load_config(tiny_coco(images, annotations, images.parent / "out")[1:])
    with pytest.warns(BadSampleWarning) as caught:
        loader = build_train_loader(cfg)
        batches = list(itertools.islice(iter(loader), 12))  # 24 samples: every image several times
    skipped = [m for b in batches for m in b["skipped"]]
    for name in BAD:
        assert any(f"/{name}: {EXPECTED[name]}" in m for m in skipped), (name, skipped)
        assert any(name in str(w.message) for w in caught)
    bad_ids = {r.image_id for r in loader.dataset.records if Path(r.path).name in BAD}
    used = {t["image_id"] for b in batches for t in b["targets"]}
    assert not used & bad_ids and len(used) == len(EXPECTED) - len(BAD)
    for batch in batches:
        assert len(batch["images"]) == 2 and all(i.shape[0] == 3 for i in batch["images"])


def test_train_net_skips_bad_images_with_finite_losses(corpus):
    images, annotations = corpus
    out = images.parent / "run"
    proc = train_net(tiny_coco(images, annotations, out, "train.max_iter=4", "train.checkpoint_period=4"))
    log = (out / "log.txt").read_text()
    for name in BAD:
        assert f"Skipped a bad training sample: {images / name}: {EXPECTED[name]}" in log, name
        observe(f"image: {name} (training, on_bad_sample=skip)",
                next(line.split("] ")[-1] for line in log.splitlines() if f"sample: {images / name}" in line),
                "that image only (replaced by another); losses finite")
    losses = [float(v) for line in log.splitlines() if "total_loss:" in line
              for v in [line.split("total_loss: ")[1].split()[0]]]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert "Traceback" not in proc.stdout + proc.stderr


def test_train_net_refuses_a_bad_image_under_on_bad_sample_error(corpus):
    """With a loader worker, the message still arrives whole, without the worker's traceback."""
    images, annotations = corpus
    out = images.parent / "strict"
    proc = train_net(tiny_coco(images, annotations, out, "train.max_iter=4", "dataset.on_bad_sample=error",
                               "dataloader.num_workers=1"), check=False)
    stderr = assert_clean_failure(proc, "error: bad sample ", "dataset.on_bad_sample=skip")
    observe("bad image under dataset.on_bad_sample=error (train_net, 1 loader worker)", stderr,
            "the run stops (exit 1) at the first bad image; no traceback")
    assert any(f"{images / name}: {EXPECTED[name]}" in stderr for name in BAD), stderr
