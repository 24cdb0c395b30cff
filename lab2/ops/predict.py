"""``python -m lab2 predict``: a mask PNG and an overlay PNG per photo file (:mod:`lab2.predict`
computes them).

Every file is encoded in memory and written atomically, so a full disk or a read-only folder is
an error naming the file, never a 0-byte mask reported as written. Two inputs with the same stem
(``a/cat.jpg`` and ``b/cat.png``) get distinct outputs (``cat`` and ``cat-2``).
"""

from __future__ import annotations

import os
import warnings
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.reading import read_rgb
from ..predict import overlay, predict_mask
from . import atomic
from .audit import SKIPPED, check_image, image_format
from .evaluation import load_trained_model
from .notices import SyntheticDataWarning


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 grey (H, W) or RGB (H, W, 3) array."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as PNG")
    return buf.tobytes()


def output_stems(images: list[Path]) -> list[str]:
    """One output name per input: its stem, with ``-2``, ``-3``, ... for repeated stems."""
    seen: dict[str, int] = {}
    stems = []
    for path in images:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return stems


#: What the messages about a file that is not a photo add.
READABLE = "lab2 reads any format Pillow reads (JPEG, PNG, GIF, WebP, BMP, TIFF, ...)"


#: An iPhone's default photo format, which Pillow does not read.
HEIC = (".heic", ".heif")


def _not_a_photo(path: Path, problem: str) -> str:
    heic = path.suffix.lower() in HEIC
    return f"{path}: {problem}" + (
        " (HEIC: export the photo as JPEG; an iPhone takes JPEGs with Settings > Camera > "
        "Formats > Most Compatible)" if heic else "")


def gather_photos(inputs: list[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """The photos to segment — each file named, and the files of each folder named (sorted; not
    its subfolders, hidden files or files that are not images, such as ``Thumbs.db``) — and one
    problem per input that gives none (missing, not an image by its header, a folder without
    photos) and per file of a folder that is named as a photo but is not one (HEIC, or
    ``cat.jpg`` holding a web page or zeros). Decodes nothing: :func:`predict_files` checks each
    photo whole."""
    photos, problems = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.iterdir() if p.is_file() and not p.name.startswith("."))
            found, named_as_photos = [], []
            for path in files:
                if _looks_like_a_photo(path, if_unopenable=False):
                    found.append(path)
                elif path.suffix.lower() in photo_suffixes():
                    named_as_photos.append(path)
            photos += found
            problems += [_not_a_photo(path, _what_it_is(path)) for path in named_as_photos]
            if not found and not named_as_photos:
                problems.append(f"{item}: a folder without photos")
        elif not item.is_file():
            problems.append(f"{item}: no such file or folder")
        elif _looks_like_a_photo(item, if_unopenable=True):   # predict_files says why it cannot
            photos.append(item)                               # open one
        else:
            problems.append(_not_a_photo(item, _what_it_is(item)))
    return photos, problems


def _what_it_is(path: Path) -> str:
    """What a file that is not an image is, as far as a name can say."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    return "an empty file (an interrupted copy or download?)" if empty else "not an image"


@cache
def photo_suffixes() -> frozenset[str]:
    """The file name endings of photos: every one Pillow reads (``.jpg``, ``.png``, ``.webp``,
    ...) and HEIC's."""
    Image.init()
    return frozenset(Image.registered_extensions()) | frozenset(HEIC)


def _looks_like_a_photo(path: Path, *, if_unopenable: bool) -> bool:
    """Whether ``path``'s header is an image's (:func:`lab2.data.reading.image_format`);
    ``if_unopenable`` for a file that cannot be opened."""
    try:
        return image_format(path) is not None
    except OSError:
        return if_unopenable


def predict_files(checkpoint: str | os.PathLike, images: list[str | os.PathLike],
                  out_dir: str | os.PathLike) -> tuple[list[tuple[Path, Path, Path]], list[str]]:
    """Write ``<name>_mask.png`` (0 background, 255 pet) and ``<name>_overlay.png`` per image
    that can be read; return (image, mask, overlay) for each, in input order (each file
    written checked), and one
    problem per image that cannot be read (missing, truncated, too large, not an image): those
    are left out and the others segmented. ``ValueError`` when none can be read. A checkpoint
    trained on the synthetic sample says so (:class:`lab2.ops.notices.SyntheticDataWarning`)."""
    model, config, state = load_trained_model(checkpoint)
    if (state.get("data") or {}).get("label") == "synthetic sample":
        warnings.warn(f"{checkpoint} was trained on the SYNTHETIC sample: its masks of real "
                      "photos say nothing about what it would learn from Oxford-IIIT Pet",
                      SyntheticDataWarning, stacklevel=2)
    out_dir = Path(out_dir)
    paths, problems = [], []
    for path in map(Path, images):
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        status, problem = check_image(path)
        if status == SKIPPED:
            problems.append(_not_a_photo(path, problem))
        else:
            paths.append(path)
    if not paths:
        raise ValueError(f"cannot read any of the {len(problems)} photos: "
                         f"{'; '.join(problems)}. {READABLE}")
    written = []
    for path, stem in zip(paths, output_stems(paths), strict=True):
        image = read_rgb(path, upright=True)     # a phone's portrait photo, as it is viewed
        mask = predict_mask(model, config, image)
        files = []
        for suffix, picture in (("mask", mask * 255), ("overlay", overlay(image, mask))):
            target = out_dir / f"{stem}_{suffix}.png"
            atomic.write_bytes(target, png_bytes(picture), fix="choose another --out folder")
            files.append(target)
        written.append((path, *files))
    return written, problems
