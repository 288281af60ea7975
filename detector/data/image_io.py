"""Reading any image file as 8-bit RGB, or failing with a reason that names the file.

Real datasets mix grayscale, palette, RGBA, CMYK and 16-bit files, carry EXIF rotations
and sometimes hold truncated or enormous files. Everything downstream expects an
HxWx3 uint8 array in the orientation a person sees, so all of that is handled here once.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
from PIL import Image, ImageOps

# PIL's own default (about 89 megapixels); an image above it is refused rather than
# decoded, because a tiny compressed file can expand to tens of gigabytes.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


class BadImageError(Exception):
    """An image that cannot be used: `path` and `reason` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_image_rgb(
    path: str,
    expected_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Decode `path` to an HxWx3 uint8 RGB array with EXIF orientation applied.

    expected_size: (width, height) the annotations were made for. When the file's size
    differs, the boxes would point at the wrong pixels, so the image is refused. If only
    the EXIF-rotated size differs, the annotations were made on the stored pixels and the
    rotation is not applied.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        # PIL refuses outright at twice its own limit; a larger limit asked for explicitly wins.
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(
                    path,
                    f"refused as a possible decompression bomb: {width}x{height} = {width * height} pixels "
                    f"is above the limit of {max_pixels} (raise dataset.max_image_pixels if the image is genuine)",
                )
            with warnings.catch_warnings():
                # PIL warns instead of raising between 1x and 2x its own limit; ours is checked above.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
            # exif_transpose copies the image even when there is nothing to do: ask first.
            oriented = ImageOps.exif_transpose(image) if image.getexif().get(0x0112, 1) != 1 else image
            if expected_size is not None and tuple(oriented.size) != tuple(expected_size):
                if tuple(image.size) == tuple(expected_size):
                    oriented = image
                else:
                    raise BadImageError(
                        path,
                        f"size mismatch: the file is {oriented.size[0]}x{oriented.size[1]} (width x height) but the "
                        f"annotations say {expected_size[0]}x{expected_size[1]}",
                    )
            return to_rgb_array(oriented)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except Image.DecompressionBombError as error:
        # PIL refuses at open (from the header) above twice its limit: say it as above.
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{found.group(1)} pixels" if found else str(error)
        raise BadImageError(
            path, f"refused as a possible decompression bomb: {size} is above the limit of {max_pixels} "
                  "(raise dataset.max_image_pixels if the image is genuine)") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as error:
        # Truncated JPEGs ("image file is truncated"), non-image files, broken headers.
        raise BadImageError(path, f"unreadable or corrupt image ({type(error).__name__}: {error})") from None


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8 RGB."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit grayscale: PIL's convert() would clip at 255, so scale instead.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values * (255.0 / peak), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL asks for this path for palette transparency
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, LA, RGBA, CMYK, YCbCr, 1, P
    return np.asarray(image, dtype=np.uint8).copy()


def read_image_size(path: str) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise BadImageError(path, f"unreadable image header ({type(error).__name__}: {error})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
