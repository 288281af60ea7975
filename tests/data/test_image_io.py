"""Image decoding: every mode becomes RGB, EXIF orientation applies, bad files are named."""
import numpy as np
import pytest
from PIL import Image

from detector.data.image_io import BadImageError, read_image_rgb


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return str(path)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1"])
def test_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 20, 3), dtype=np.uint8))
    image = rgb.convert(mode)
    path = _save(tmp_path, f"x_{mode}.{'jpg' if mode == 'CMYK' else 'png'}", image)
    out = read_image_rgb(path, (20, 12))
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.full((8, 8), 32768, dtype=np.uint16)
    path = _save(tmp_path, "x16.png", Image.fromarray(values))
    out = read_image_rgb(path)
    assert out.shape == (8, 8, 3) and 120 <= int(out[0, 0, 0]) <= 135


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 30, 3), np.uint8)
    array[:, :5] = 255  # bright left edge
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = _save(tmp_path, "rot.jpg", image, exif=exif, quality=100)
    out = read_image_rgb(path, (10, 30))
    assert out.shape == (30, 10, 3)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the left edge is now on top


def test_bad_files_are_named_with_a_reason(tmp_path):
    good = _save(tmp_path, "good.jpg", Image.new("RGB", (40, 30)))
    with pytest.raises(BadImageError, match="missing.jpg: file not found"):
        read_image_rgb(str(tmp_path / "missing.jpg"))
    truncated = tmp_path / "truncated.jpg"
    data = open(good, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="truncated.jpg: unreadable or corrupt"):
        read_image_rgb(str(truncated))
    with pytest.raises(BadImageError, match="size mismatch.*40x30.*50x30"):
        read_image_rgb(good, (50, 30))
    with pytest.raises(BadImageError, match="decompression bomb"):
        read_image_rgb(good, max_pixels=100)
