"""A synthetic sample of the data set, in the exact official layout, for offline and CPU runs.

Every image is drawn procedurally: a pet (body, head, ears, legs, tail; fur-like texture, stripes or
spots, soft edges) on a textured, cluttered background that sometimes has the pet's colours, with
fur-textured distractors and partial occlusion. Trimaps hold 1 = pet, 2 = background and a border
band of 3, like the real ones. Names and class ids are drawn from the 37 real breeds.

The sample plants the same kinds of odd files as the real archive (see docs/report.md) so that the
audit and the robust reader are exercised: a ``.mat`` file in ``images/``, a GIF and an RGBA PNG
saved as ``.jpg``, a grayscale JPEG, a truncated JPEG, a listed sample without a trimap, and hidden
``._*`` files next to the trimaps. ``SampleInfo.planted`` says which file is which.

Results computed on this sample say nothing about the real data set; label them as synthetic.

The sample is drawn into a private ``.oxford-iiit-pet.partial-XXXX/`` folder beside its final
place and renamed there when complete (with its manifest, which lists every file it wrote),
under a lock, so an interrupted or concurrent ``sample`` never leaves a half-written sample for
the next command to trip over; leftover partial folders are removed by the next call. A sample
made with other settings is replaced only when asked (``--overwrite``), and then only its own
files: whatever else the user put in the folder is carried over into the new one.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.index import (
    BREEDS,
    DATASET_FOLDER,
    Record,
    breed_id_of,
    dataset_dir,
    read_list,
    species_of,
)
from . import atomic, locks
from .audit import IGNORED, RECOVERED, SKIPPED

SAMPLE_VERSION = 1
MANIFEST = ".lab2-sample.json"

LIST_HEADER = """\
#Image CLASS-ID SPECIES BREED ID
#ID: 1:37 Class ids
#SPECIES: 1:Cat 2:Dog
#BREED ID: 1-12:Cat 1-25:Dog
#All images with 1st letter as captial are cat images
#images with small first letter are dog images
#SYNTHETIC SAMPLE written by lab2 (python -m lab2 sample); not the real data set
"""

# Fur colours (RGB): browns, blacks, greys, creams, ginger, white.
_FUR = np.array([
    (120, 80, 45), (60, 40, 25), (30, 28, 26), (90, 90, 95), (160, 150, 140), (210, 190, 150),
    (200, 120, 50), (235, 230, 220), (150, 110, 70), (180, 160, 120),
], dtype=np.float32)


@dataclass
class SampleInfo:
    folder: str
    seed: int
    n_trainval: int
    n_test: int
    size: int
    #: file (relative to the data set folder) → (audit status, what was planted)
    planted: dict[str, tuple[str, str]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1
                  ) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a few random cells, upsampled bicubically."""
    small = rng.random((max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w)), channels),
                       dtype=np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(big.reshape(h, w, channels), 0, 1)


def _fur_texture(rng: np.random.Generator, h: int, w: int, angle: float) -> np.ndarray:
    """Streaky fur: white noise blurred along one direction, in [-1, 1]."""
    noise = rng.standard_normal((h, w)).astype(np.float32)
    k = 9
    kernel = np.zeros((k, k), np.float32)
    c = k // 2
    dx, dy = np.cos(angle), np.sin(angle)
    for t in np.linspace(-c, c, 2 * k):
        kernel[int(round(c + t * dy)), int(round(c + t * dx))] = 1
    kernel /= kernel.sum()
    fur = cv2.filter2D(noise, -1, kernel)
    return np.clip(fur / (fur.std() + 1e-6) / 3, -1, 1)


def _background(rng: np.random.Generator, h: int, w: int, near: np.ndarray | None) -> np.ndarray:
    """Textured, cluttered scene (float RGB 0–255); ``near`` is a colour to echo (camouflage)."""
    base = rng.uniform(40, 220, size=3).astype(np.float32) if near is None else \
        np.clip(near + rng.normal(0, 25, 3), 0, 255).astype(np.float32)
    second = rng.uniform(30, 230, size=3).astype(np.float32)
    blend = _smooth_noise(rng, h, w, int(rng.integers(2, 6)))
    image = base * (1 - blend) + second * blend
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # stripes (floorboards, curtains)
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6, 30)
        stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
        image += (stripes[..., None] * rng.uniform(10, 35)).astype(np.float32)
    elif kind == 1:  # grass / carpet: fine streaky noise
        image += _fur_texture(rng, h, w, rng.uniform(0, np.pi))[..., None] * rng.uniform(15, 40)
    elif kind == 2:  # checker (tiles, blankets)
        cell = rng.uniform(10, 40)
        checker = ((xx // cell + yy // cell) % 2)[..., None] * 2 - 1
        image += checker * rng.uniform(8, 30)
    image += rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    # Clutter: furniture-like rectangles, circles and lines.
    for _ in range(int(rng.integers(2, 9))):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        shape = rng.integers(3)
        if shape == 0:
            x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
        elif shape == 1:
            cv2.circle(image, (x0, y0), int(rng.integers(5, min(h, w) // 4)), colour, -1)
        else:
            x1, y1 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(image, (x0, y0), (x1, y1), colour, int(rng.integers(2, 8)))
    return image


def _pet_shape(rng: np.random.Generator, h: int, w: int, cat: bool) -> tuple[np.ndarray, tuple]:
    """Binary mask (uint8 0/1) of a pet seen from the side, and its head's (x, y, r)."""
    mask = np.zeros((h, w), np.uint8)
    side = min(h, w)
    length = rng.uniform(0.3, 0.65) * side           # body half-length × 2
    a, b = length / 2, length / 2 * rng.uniform(0.4, 0.65)
    cx = rng.uniform(0.2, 0.8) * w
    cy = rng.uniform(0.35, 0.75) * h
    tilt = rng.uniform(-25, 25)
    facing = 1 if rng.random() < 0.5 else -1
    rad = np.deg2rad(tilt)
    ux, uy = np.cos(rad) * facing, np.sin(rad) * facing      # body axis towards the head
    cv2.ellipse(mask, (int(cx), int(cy)), (int(a), int(b)), tilt, 0, 360, 1, -1)
    # Legs: four thick strokes below the body.
    leg_len = b * rng.uniform(0.9, 1.6)
    leg_w = max(2, int(b * rng.uniform(0.25, 0.4)))
    for t in (-0.65, -0.35, 0.35, 0.65):
        x0, y0 = cx + ux * a * t, cy + uy * a * t + b * 0.5
        x1 = x0 + rng.uniform(-0.3, 0.3) * leg_len
        cv2.line(mask, (int(x0), int(y0)), (int(x1), int(y0 + leg_len)), 1, leg_w)
    # Head: a circle at the front, raised.
    r = b * rng.uniform(0.75, 1.05)
    hx, hy = cx + ux * (a * 0.95), cy + uy * a * 0.95 - b * rng.uniform(0.5, 1.0)
    cv2.circle(mask, (int(hx), int(hy)), int(r), 1, -1)
    cv2.line(mask, (int(cx + ux * a * 0.6), int(cy)), (int(hx), int(hy)), 1, int(r))  # neck
    # Ears: pointed triangles (cats) or floppy ellipses (dogs).
    for side_sign in (-1, 1):
        ex = hx + side_sign * r * 0.55
        if cat:
            tip = (int(ex + side_sign * r * 0.2), int(hy - r * rng.uniform(1.4, 1.8)))
            base = [(int(ex - r * 0.35), int(hy - r * 0.6)),
                    (int(ex + r * 0.35), int(hy - r * 0.6))]
            cv2.fillPoly(mask, [np.array([base[0], tip, base[1]], np.int32)], 1)
        else:
            cv2.ellipse(mask, (int(ex + side_sign * r * 0.3), int(hy + r * 0.1)),
                        (max(2, int(r * 0.3)), max(3, int(r * 0.75))), side_sign * 20,
                        0, 360, 1, -1)
    # Tail: a curved stroke from the back.
    tx, ty = cx - ux * a * 0.9, cy - uy * a * 0.9 - b * 0.2
    curl = rng.uniform(-1, 1)
    pts = [(tx - ux * a * s * 0.6 + curl * s * b * 0.5, ty - s * b * rng.uniform(0.4, 1.2))
           for s in np.linspace(0, 1, 6)]
    cv2.polylines(mask, [np.array(pts, np.int32)], False, 1, max(2, int(b * 0.2)))
    return mask, (hx, hy, r)


def _draw_sample(rng: np.random.Generator, h: int, w: int, cat: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic photo (uint8 RGB) and its trimap (uint8, values 1/2/3)."""
    fur = _FUR[rng.integers(len(_FUR))] + rng.normal(0, 12, 3).astype(np.float32)
    camouflage = rng.random() < 0.3
    image = _background(rng, h, w, fur if camouflage else None)
    # Fur-textured distractors (cushions, rugs) that are not pets.
    for _ in range(int(rng.random() < 0.35) + int(rng.random() < 0.15)):
        blob = np.zeros((h, w), np.uint8)
        cv2.ellipse(blob, (int(rng.integers(w)), int(rng.integers(h))),
                    (int(rng.integers(8, w // 4)), int(rng.integers(8, h // 4))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
        colour = _FUR[rng.integers(len(_FUR))]
        texture = colour + _fur_texture(rng, h, w, rng.uniform(0, np.pi))[..., None] * 40
        image = np.where(blob[..., None] > 0, texture, image)

    mask, (hx, hy, r) = _pet_shape(rng, h, w, cat)
    # Fur: base colour, streaks, stripes or spots, shading from above.
    streak = _fur_texture(rng, h, w, rng.uniform(0, np.pi))
    pet = fur + streak[..., None] * rng.uniform(15, 45)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pattern = rng.integers(3)
    if pattern == 0:  # tabby stripes
        period = rng.uniform(5, 14)
        stripes = (np.sin((xx + 0.4 * yy) * 2 * np.pi / period) > 0.3).astype(np.float32)
        pet = pet * (1 - 0.35 * stripes[..., None])
    elif pattern == 1:  # patches
        patches = _smooth_noise(rng, h, w, 8) > 0.6
        second = _FUR[rng.integers(len(_FUR))]
        pet = np.where(patches, second + streak[..., None] * 20, pet)
    shade = 1.15 - 0.3 * (yy / h)
    pet = pet * shade[..., None]
    # Eyes and nose, inside the head.
    for s in (-1, 1):
        cv2.circle(pet, (int(hx + s * r * 0.35), int(hy - r * 0.1)), max(1, int(r * 0.12)),
                   (20, 20, 10), -1)
    cv2.circle(pet, (int(hx), int(hy + r * 0.35)), max(1, int(r * 0.1)), (40, 20, 20), -1)

    # Occlusion: a foreground post, plant or table edge hides part of the pet.
    if rng.random() < 0.3:
        occluder = np.zeros((h, w), np.uint8)
        ys, xs = np.nonzero(mask)
        if len(xs):
            x = int(rng.choice(xs))
            cv2.rectangle(occluder, (x, 0), (x + int(rng.integers(4, max(5, w // 8))), h), 1, -1)
        mask_visible = mask & (1 - occluder)
        occ_colour = rng.uniform(20, 235, 3).astype(np.float32)
        occ_texture = occ_colour + _fur_texture(rng, h, w, np.pi / 2)[..., None] * 15
    else:
        occluder, mask_visible, occ_texture = None, mask, None

    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)[..., None]
    image = image * (1 - alpha) + pet * alpha
    if occluder is not None:
        image = np.where(occluder[..., None] > 0, occ_texture, image)
    image = cv2.GaussianBlur(image, (0, 0), 0.5) + rng.normal(0, 3, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)

    # Trimap: a border band of 3 straddling the outline, as in the real annotations.
    k = max(3, int(round(min(h, w) / 70)) * 2 + 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    band = cv2.dilate(mask_visible, kernel) != cv2.erode(mask_visible, kernel)
    trimap = np.full((h, w), 2, np.uint8)
    trimap[mask_visible > 0] = 1
    trimap[band] = 3
    return image, trimap


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _pil_bytes(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _draw_names(rng: np.random.Generator, n: int, counters: dict[str, int]) -> list[Record]:
    records = []
    for _ in range(n):
        breed = BREEDS[int(rng.integers(len(BREEDS)))]
        counters[breed] = counters.get(breed, 0) + 1
        records.append(Record(f"{breed}_{counters[breed]}", BREEDS.index(breed) + 1,
                              species_of(breed), breed_id_of(breed)))
    return records


def make_sample_dataset(root: str | os.PathLike, *, seed: int = 0, n_trainval: int = 400,
                        n_test: int = 100, size: int = 256, progress: bool = True,
                        overwrite: bool = False) -> SampleInfo:
    """Write the synthetic sample into ``root/oxford-iiit-pet`` and return what was written.

    Image sides are drawn between ``0.625 * size`` and ``size`` (varied aspect ratios). A sample
    with the same settings already on disk is reused unless ``overwrite``.
    """
    if n_trainval < 10 or n_test < 5:
        raise ValueError("the sample needs n_trainval >= 10 and n_test >= 5 (to plant odd files)")
    if size < 64:
        raise ValueError(f"size={size} is too small; use at least 64 pixels")
    folder = dataset_dir(root)
    settings = dict(version=SAMPLE_VERSION, seed=seed, n_trainval=n_trainval, n_test=n_test,
                    size=size)
    parent = folder.parent
    fix = "choose a writable --root with room for the sample (a few MB)"
    with locks.owned(parent / ".lab2-sample.lock", f"the sample {folder}", wait=True, fix=fix):
        _finish_interrupted(folder)
        manifest = folder / MANIFEST
        stored = (atomic.read_json(manifest, "delete the folder's sample files, or pass "
                                             "--overwrite to write them anew")
                  if manifest.is_file() else None)
        if stored is not None and not overwrite:
            if stored.get("settings") == settings:
                return SampleInfo(str(folder), seed, n_trainval, n_test, size,
                                  {k: tuple(v) for k, v in stored["planted"].items()})
            raise ValueError(
                f"{folder} holds a lab2 sample made with other settings ("
                f"{_described(stored.get('settings') or {})}, not {_described(settings)}); pass "
                "--overwrite (python -m lab2 sample --overwrite ...) to replace its files, "
                "which keeps every file lab2 did not write there, or choose another --root")
        if folder.exists() and any(folder.iterdir()) and stored is None and not overwrite:
            raise ValueError(f"{folder} holds files that are not a lab2 sample (the real data "
                             "set?); choose another --root or pass --overwrite")
        theirs = _files_not_written_by_lab2(folder, stored)
        try:
            partial = Path(tempfile.mkdtemp(prefix=f".{DATASET_FOLDER}.partial-", dir=parent))
        except OSError as e:
            raise atomic.storage_error(parent, e, fix) from e
        try:
            info = _write_sample(partial, seed, n_trainval, n_test, size, progress, settings)
            clash = sorted(name for name in theirs if (partial / name).exists()
                           and not (partial / name).is_dir())
            if clash:
                raise ValueError(
                    f"{folder} holds {len(clash)} file(s) lab2 did not write where the new "
                    f"sample writes its own ({', '.join(clash[:5])}"
                    f"{' ...' if len(clash) > 5 else ''}); move them elsewhere, or choose "
                    "another --root")
            _bring_over(folder, partial, theirs)
            os.chmod(partial, atomic.folder_mode())
            if folder.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{DATASET_FOLDER}.partial-", dir=parent))
                atomic.replace(folder, old / "old")
            atomic.replace(partial, folder)   # retried while a scanner holds a new file
        except BaseException as e:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(e, OSError) and not isinstance(e, atomic.StorageError):
                raise atomic.storage_error(folder, e, fix) from e
            raise
        for leftover in parent.glob(f".{DATASET_FOLDER}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)   # the replaced sample
        return replace(info, folder=str(folder))


def _described(settings: dict) -> str:
    """A sample's settings as the flags of ``sample`` say them."""
    return (f"--seed {settings.get('seed')} --n-trainval {settings.get('n_trainval')} "
            f"--n-test {settings.get('n_test')} --size {settings.get('size')}")


def _finish_interrupted(folder: Path) -> None:
    """Undo what a killed replacement left: the sample folder moved aside into a
    ``.partial-*/old`` folder while the new one was not yet in its place (the user's files are
    in there too) goes back; then every partial folder is removed."""
    parent = folder.parent
    leftovers = list(parent.glob(f".{DATASET_FOLDER}.partial-*"))
    if not folder.exists():
        for leftover in leftovers:
            if (leftover / "old").is_dir():
                atomic.replace(leftover / "old", folder)
                break
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)   # an interrupted earlier call's


def _lab2_files(folder: Path, stored: dict) -> set[str]:
    """The files (relative to ``folder``) that the sample described by ``stored`` (its
    manifest) wrote: listed in the manifest, or, for a sample written before manifests listed
    them, its list files, each listed sample's image and trimap, and the planted files."""
    if isinstance(stored.get("files"), list):
        return set(stored["files"])
    files = {MANIFEST, "annotations/trainval.txt", "annotations/test.txt",
             "annotations/list.txt", *stored.get("planted", {})}
    for name in ("trainval.txt", "test.txt"):
        try:
            records = read_list(folder / "annotations" / name)
        except (OSError, ValueError):
            continue
        files.update(f for r in records
                     for f in (f"images/{r.name}.jpg", f"annotations/trimaps/{r.name}.png"))
    return files


def _files_not_written_by_lab2(folder: Path, stored: dict | None) -> list[str]:
    """Every file and folder under ``folder`` (relative, folders ending in ``/``) that its
    sample did not write: what the user put there, kept when the sample is replaced."""
    if not folder.is_dir():
        return []
    ours = _lab2_files(folder, stored) if stored is not None else set()
    theirs = []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                theirs.append(name + "/")                 # an empty folder of theirs
        elif name not in ours:
            theirs.append(name)
    return theirs


def _bring_over(source: Path, target: Path, names: list[str]) -> None:
    """Hard-link (or, where the file system cannot, copy) each of ``names`` from ``source``
    into ``target``: the originals stay where they are until the new folder is in place, so a
    kill at any moment loses none of them."""
    for name in names:
        if name.endswith("/"):
            (target / name).mkdir(parents=True, exist_ok=True)
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / name, target / name, follow_symlinks=False)
        except OSError:
            shutil.copy2(source / name, target / name, follow_symlinks=False)


def _write_sample(folder: Path, seed: int, n_trainval: int, n_test: int, size: int,
                  progress: bool, settings: dict) -> SampleInfo:
    """Draw the whole sample into ``folder`` (its manifest last)."""
    manifest = folder / MANIFEST
    images, trimaps = folder / "images", folder / "annotations" / "trimaps"
    images.mkdir(parents=True)
    trimaps.mkdir(parents=True)

    rng = np.random.default_rng(seed)
    counters: dict[str, int] = {}
    trainval = _draw_names(rng, n_trainval, counters)
    test = _draw_names(rng, n_test, counters)
    records = trainval + test
    # Which samples get which defect: fixed positions, spread over train, val and test.
    defects = {trainval[1].name: "gif", trainval[3].name: "rgba_png", trainval[5].name: "gray",
               trainval[7].name: "truncated", test[2].name: "missing_trimap"}
    planted: dict[str, tuple[str, str]] = {}

    for i, rec in enumerate(tqdm(records, desc="sample", unit="img", disable=not progress,
                                 leave=False)):
        r = np.random.default_rng([seed, i])
        long_side = int(r.integers(int(size * 0.8), size + 1))
        short_side = int(r.integers(int(size * 0.625), long_side + 1))
        h, w = (short_side, long_side) if r.random() < 0.6 else (long_side, short_side)
        image, trimap = _draw_sample(r, h, w, cat=rec.species == 1)
        defect = defects.get(rec.name)
        image_file = images / f"{rec.name}.jpg"
        if defect == "gif":
            data = _pil_bytes(Image.fromarray(image).convert("P", palette=Image.ADAPTIVE), "GIF")
            planted[f"images/{rec.name}.jpg"] = (RECOVERED, "GIF data saved as .jpg")
        elif defect == "rgba_png":
            data = _pil_bytes(Image.fromarray(image).convert("RGBA"), "PNG")
            planted[f"images/{rec.name}.jpg"] = (RECOVERED, "RGBA PNG data saved as .jpg")
        elif defect == "gray":
            data = _pil_bytes(Image.fromarray(image).convert("L"), "JPEG")
            planted[f"images/{rec.name}.jpg"] = (RECOVERED, "grayscale JPEG")
        elif defect == "truncated":
            full = _jpeg_bytes(image)
            data = full[: len(full) // 2]
            planted[f"images/{rec.name}.jpg"] = (SKIPPED, "truncated JPEG")
        else:
            data = _jpeg_bytes(image, int(r.integers(80, 96)))
        image_file.write_bytes(data)
        if defect == "missing_trimap":
            planted[f"annotations/trimaps/{rec.name}.png"] = (SKIPPED, "trimap missing")
        else:
            ok, png = cv2.imencode(".png", trimap)
            if not ok:
                raise ValueError(f"OpenCV could not encode the trimap of {rec.name}")
            (trimaps / f"{rec.name}.png").write_bytes(png.tobytes())

    # Not-an-image files in images/, as the real archive's Abyssinian_10x.mat.
    mat_name = f"{BREEDS[0]}_{counters.get(BREEDS[0], 0) + 100}.mat"
    (images / mat_name).write_bytes(b"MATLAB 5.0 MAT-file, synthetic stand-in written by lab2\n"
                                    + bytes(64))
    planted[f"images/{mat_name}"] = (SKIPPED, "not an image (.mat)")
    # Hidden AppleDouble files next to the trimaps, as in the annotations archive.
    for rec in trainval[:2]:
        (trimaps / f"._{rec.name}.png").write_bytes(b"\x00\x05\x16\x07" + bytes(78))
        planted[f"annotations/trimaps/._{rec.name}.png"] = (IGNORED, "hidden ._ file")

    annotations = folder / "annotations"
    for name, text in (("trainval.txt", "".join(r.line() + "\n" for r in trainval)),
                       ("test.txt", "".join(r.line() + "\n" for r in test)),
                       ("list.txt", LIST_HEADER + "".join(r.line() + "\n" for r in records))):
        (annotations / name).write_text(text, encoding="utf-8")
    info = SampleInfo(str(folder), seed, n_trainval, n_test, size, planted)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    atomic.write_json(manifest, {"settings": settings, "planted": planted,
                                 "files": [*files, MANIFEST]})
    return info


def is_sample(root: str | os.PathLike) -> bool:
    """Whether the data set under ``root`` is a lab2 synthetic sample."""
    return (dataset_dir(root) / MANIFEST).is_file()


def dataset_label(root: str | os.PathLike) -> str:
    """How every output names its data: ``"synthetic sample"`` or ``"Oxford-IIIT Pet"``."""
    return "synthetic sample" if is_sample(root) else "Oxford-IIIT Pet"
