"""A cache of resized (and optionally preprocessed) samples, built once, read every epoch.

Running the preprocessing chain at 512×512 costs far more than a training step can wait for, so
each variant of the data set is computed once and stored under
``<data root>/cache/<fingerprint>/``. The fingerprint covers the data set (file names and sizes),
the image size, the preprocessing parameters (or "raw") and :data:`CACHE_VERSION`: changing any of
them builds a new cache.

Storage: two uint8 ``.npy`` arrays opened as memory maps — ``images.npy`` (N, H, W, 3) RGB and
``trimaps.npy`` (N, H, W) with the trimap values 1/2/3 (the mask convention is applied when
reading, so one cache serves every convention) — plus ``meta.json`` listing the sample names.
A memory-map row read is a copy of contiguous bytes; ``benchmarks/data_pipeline.py`` measured it
against per-sample PNG and ``.npy`` files (see ``benchmarks/RESULTS.md``).

A cache is built in ``<fingerprint>.partial/`` and renamed into place only when complete, so an
interrupted build is never taken for a finished one (the next build starts it again).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import atomic
from ..preprocess import PreprocessParams, preprocess
from .audit import audit_dataset, dataset_fingerprint
from .index import load_split
from ..paths import dataset_dir
from .reading import read_sample
from .resize import as_hw, resize_pair

CACHE_VERSION = 1


def cache_root_for(root: str | os.PathLike) -> Path:
    """Default cache folder of a data root: ``<root>/cache``."""
    return Path(root).expanduser() / "cache"


def cache_fingerprint(root: str | os.PathLike, image_size: int | tuple[int, int],
                      params: PreprocessParams | None) -> str:
    key = {
        "version": CACHE_VERSION,
        "dataset": dataset_fingerprint(root),
        "image_size": list(as_hw(image_size)),
        "preprocess": None if params is None else params.to_dict(),
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class SampleCache:
    """A finished cache folder. Memory maps are opened lazily, and again after pickling (so every
    data-loader worker maps the file itself instead of receiving a copy)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.names: list[str] = self.meta["names"]
        self.row = {name: i for i, name in enumerate(self.names)}
        self._images = self._trimaps = None

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.meta["image_size"])  # type: ignore[return-value]

    def __contains__(self, name: str) -> bool:
        return name in self.row

    def _open(self) -> None:
        self._images = np.load(self.folder / "images.npy", mmap_mode="r")
        self._trimaps = np.load(self.folder / "trimaps.npy", mmap_mode="r")

    def read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8 RGB, trimap (H, W) uint8) of a sample, as writable copies."""
        if self._images is None:
            self._open()
        i = self.row[name]
        return np.array(self._images[i]), np.array(self._trimaps[i])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_trimaps": None}


def find_cache(root: str | os.PathLike, image_size: int | tuple[int, int],
               params: PreprocessParams | None, cache_root: str | os.PathLike | None = None
               ) -> SampleCache | None:
    """The finished cache for these settings, or None."""
    folder = Path(cache_root or cache_root_for(root)) / cache_fingerprint(root, image_size, params)
    return SampleCache(folder) if (folder / "meta.json").is_file() else None


# ---- building ------------------------------------------------------------------------------------

_worker_state: dict = {}


def _init_worker(folder: str, dataset: str, size: tuple[int, int],
                 params: PreprocessParams | None) -> None:
    _worker_state.update(
        images=np.load(Path(folder) / "images.npy", mmap_mode="r+"),
        trimaps=np.load(Path(folder) / "trimaps.npy", mmap_mode="r+"),
        dataset=Path(dataset), size=size, params=params)


def _fill_row(job: tuple[int, str]) -> int:
    row, name = job
    s = _worker_state
    image, trimap = read_sample(s["dataset"], name)
    image, trimap = resize_pair(image, trimap, s["size"])
    if s["params"] is not None:
        image = preprocess(image, s["params"])
    s["images"][row] = image
    s["trimaps"][row] = trimap
    return row


def build_cache(root: str | os.PathLike, image_size: int | tuple[int, int],
                params: PreprocessParams | None = None, *,
                cache_root: str | os.PathLike | None = None, workers: int | None = None,
                progress: bool = True) -> SampleCache:
    """Build (or find) the cache of every usable listed sample at ``image_size``.

    ``params=None`` stores the raw resized images; a :class:`PreprocessParams` stores them after
    the preprocessing chain (applied after resizing). Skips the files the audit skips.
    """
    found = find_cache(root, image_size, params, cache_root)
    if found is not None:
        return found
    size = as_hw(image_size)
    fingerprint = cache_fingerprint(root, size, params)
    final = Path(cache_root or cache_root_for(root)) / fingerprint
    partial = final.with_name(fingerprint + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted build: start again
    partial.mkdir(parents=True)

    skipped = audit_dataset(root, progress=progress).skipped_names
    names = list(dict.fromkeys(r.name for split in ("trainval", "test")
                               for r in load_split(root, split) if r.name not in skipped))
    h, w = size
    np.lib.format.open_memmap(partial / "images.npy", "w+", np.uint8, (len(names), h, w, 3))
    np.lib.format.open_memmap(partial / "trimaps.npy", "w+", np.uint8, (len(names), h, w))

    init_args = (str(partial), str(dataset_dir(root)), size, params)
    jobs = list(enumerate(names))
    label = "cache " + ("preprocessed" if params is not None else "raw") + f" {h}x{w}"
    bar = dict(total=len(jobs), desc=label, unit="img", disable=not progress)
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) < 4 * workers:
        _init_worker(*init_args)
        for _ in tqdm(map(_fill_row, jobs), **bar):
            pass
        _worker_state.clear()
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init_args) as pool:
            for _ in tqdm(pool.map(_fill_row, jobs, chunksize=16), **bar):
                pass
    atomic.write_json(partial / "meta.json", {
        "version": CACHE_VERSION, "fingerprint": fingerprint, "image_size": [h, w],
        "preprocess": None if params is None else params.to_dict(),
        "dataset": str(dataset_dir(root)), "names": names,
    })
    os.replace(partial, final)
    return SampleCache(final)
