"""Reading the data set's files: an image as RGB, a trimap as its values.

The real archive holds files that a plain ``cv2.imread`` cannot read (docs/report.md lists them):
GIF or RGBA PNG data saved as ``.jpg``, grayscale and CMYK JPEGs. Pillow decodes every container
and mode, so lab2 reads with it and converts to RGB; the files with no usable pixels are found by
the audit (:mod:`lab2.ops.audit`) and left out of every split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .index import dataset_dir
from .masks import trimap_to_mask


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


def image_size_of(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header, without decoding the pixels."""
    with Image.open(path) as image:
        return image.size
