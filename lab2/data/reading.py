"""Robust reading of the data set's files, and the classification the audit reports.

The real archive holds files that a plain ``cv2.imread`` cannot read (docs/report.md lists them):
MATLAB files in ``images/``, GIF or RGBA PNG data saved as ``.jpg``, grayscale and CMYK JPEGs, a
truncated JPEG. Pillow decodes every container and mode, so lab2 reads with it, converts what it can
to RGB (*recovered*) and refuses only what has no usable pixels (*skipped*).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .index import dataset_dir
from .masks import trimap_to_mask

OK, RECOVERED, SKIPPED, IGNORED = "ok", "recovered", "skipped", "ignored"

_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF",
               b"GIF89a": "GIF"}
_EXPECTED_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF"}
_MODE_NAMES = {"RGBA": "RGBA", "P": "palette", "L": "grayscale", "LA": "grayscale+alpha",
               "CMYK": "CMYK", "1": "1-bit", "I;16": "16-bit grayscale", "I": "32-bit integer"}


def sniff_format(head: bytes) -> str | None:
    """Image format from a file's first bytes (JPEG, PNG, GIF), or None."""
    for signature, name in _SIGNATURES.items():
        if head.startswith(signature):
            return name
    return None


def pillow_format(path: str | os.PathLike) -> str | None:
    """The format Pillow identifies from a file's header (WebP, BMP, TIFF, ...), or None."""
    try:
        with Image.open(path) as image:
            return image.format
    except Exception:  # UnidentifiedImageError, OSError, ...
        return None


def image_format(path: str | os.PathLike) -> str | None:
    """A file's image format by its first bytes or by Pillow's reading of its header (nothing is
    decoded), or None: not an image."""
    with open(path, "rb") as f:
        head = f.read(16)
    return sniff_format(head) or pillow_format(path)


def check_image(path: str | os.PathLike) -> tuple[str, str]:
    """Classify an image file: (OK | RECOVERED | SKIPPED, problem description or '').

    Any format Pillow reads counts as an image (JPEG, PNG and GIF are recognised by their
    signature, the rest — WebP, BMP, TIFF, ... — by Pillow itself)."""
    path = Path(path)
    fmt = image_format(path)
    if fmt is None:
        expected = path.suffix.lower() in _EXPECTED_FORMAT
        what = "unknown data" if expected else f"a {path.suffix} file"
        return SKIPPED, f"not an image ({what})"
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
    except Image.DecompressionBombError:
        return SKIPPED, too_large(path)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... on bad data
        return SKIPPED, f"truncated or corrupt {fmt} data ({e})"
    problems = []
    expected = _EXPECTED_FORMAT.get(path.suffix.lower())
    if expected and fmt != expected:
        problems.append(f"{fmt} data saved as {path.suffix}")
    if mode != "RGB":
        problems.append(f"{_MODE_NAMES.get(mode, mode)} image, converted to RGB")
    return (RECOVERED, "; ".join(problems)) if problems else (OK, "")


def too_large(path: str | os.PathLike) -> str:
    """Why an image over Pillow's pixel limit is not decoded: its size, read from its header
    (which Pillow reads without the limit: nothing is decoded), and the limit."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            width, height = image.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return (f"too large to decode: {width}x{height} = {width * height:,} pixels, over Pillow's "
            f"limit of {2 * limit:,} (a guard against decompression bombs)")


def image_path(folder: str | os.PathLike, name: str) -> Path:
    """``<data set folder>/images/<name>.jpg``."""
    return Path(folder) / "images" / f"{name}.jpg"


def trimap_path(folder: str | os.PathLike, name: str) -> Path:
    """``<data set folder>/annotations/trimaps/<name>.png``."""
    return Path(folder) / "annotations" / "trimaps" / f"{name}.png"


def read_sample(folder: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB image, uint8 trimap) of sample ``name`` in a data set folder."""
    return read_rgb(image_path(folder, name)), read_trimap(trimap_path(folder, name))


def read_example(root: str | os.PathLike, name: str, border: str = "foreground"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, trimap, binary mask) of one sample of the data set under ``root``, at its original
    size."""
    image, trimap = read_sample(dataset_dir(root), name)
    return image, trimap, trimap_to_mask(trimap, border)


def read_rgb(path: str | os.PathLike, *, upright: bool = False) -> np.ndarray:
    """Read any decodable image as a uint8 RGB array (H, W, 3).

    16-bit greyscale (and 32-bit integer) images are scaled from their bit depth to 0-255;
    Pillow's own conversion would clip them, turning most pixels white.

    ``upright`` turns the pixels the way the photo's EXIF orientation says, as a photo viewer
    shows it: a phone stores a portrait photo sideways with such a tag. It is off for the data
    set, whose trimaps were drawn on the stored pixels."""
    with Image.open(path) as stored:
        image = ImageOps.exif_transpose(stored) if upright else stored
        if image.mode == "RGB":
            return np.asarray(image).copy()
        if image.mode.startswith("I"):   # "I;16", "I;16B", "I" (32-bit)
            values = np.asarray(image).astype(np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or values.max() <= 65535 else 2**31 - 1
            grey = np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(image.convert("RGB"))


def read_trimap(path: str | os.PathLike) -> np.ndarray:
    """Read a trimap PNG as an array (H, W) of its stored values (1/2/3): uint8, or, for a
    16-bit file whose values do not fit in 8 bits, the values it holds (a copy saved with its
    values scaled by 257 holds 257, 514 and 771; converting it to 8 bits would clip them all
    to 255)."""
    with Image.open(path) as image:
        if image.mode.startswith("I"):        # "I;16", "I": 16- or 32-bit integers
            values = np.asarray(image).copy()
            return values.astype(np.uint8) if values.max(initial=0) <= 255 else values
        if image.mode not in ("L", "P"):
            image = image.convert("L")
        return np.asarray(image).copy()


def check_trimap(path: str | os.PathLike, image_size: tuple[int, int] | None) -> tuple[str, str]:
    """Classify a trimap: SKIPPED if missing, unreadable, off-values or of another size than the
    image ((width, height) as Pillow gives it); OK otherwise."""
    path = Path(path)
    if not path.is_file():
        return SKIPPED, "trimap missing"
    try:
        trimap = read_trimap(path)
    except Exception as e:
        return SKIPPED, f"trimap unreadable ({e})"
    values = set(np.unique(trimap).tolist())
    if not values <= {1, 2, 3}:
        scaled = values <= {257, 514, 771}
        return SKIPPED, (f"trimap values {sorted(values - {1, 2, 3})} outside {{1, 2, 3}}"
                         + (" (1, 2, 3 scaled by 257: a 16-bit copy of the trimap?)"
                            if scaled else ""))
    if image_size is not None and (trimap.shape[1], trimap.shape[0]) != tuple(image_size):
        return SKIPPED, (f"trimap size {trimap.shape[1]}x{trimap.shape[0]} differs from the "
                         f"image's {image_size[0]}x{image_size[1]}")
    return OK, ""


def image_size_of(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header, without decoding the pixels."""
    with Image.open(path) as image:
        return image.size
