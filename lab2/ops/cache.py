"""A cache of resized (and optionally preprocessed) samples, built once, read every epoch.

Running the preprocessing chain at 512×512 costs far more than a training step can wait for, so
each variant of the data set is computed once and stored under
``<data root>/cache/<fingerprint>/``. The fingerprint covers the data set (the names and contents
of its files), the image size, the preprocessing parameters (or "raw") and :data:`CACHE_VERSION`:
changing any of them builds a new cache.

Storage: two uint8 ``.npy`` arrays opened as memory maps — ``images.npy`` (N, H, W, 3) RGB and
``trimaps.npy`` (N, H, W) with the trimap values 1/2/3 (the mask convention is applied when
reading, so one cache serves every convention) — plus ``meta.json`` listing the sample names.
A memory-map row read is a copy of contiguous bytes; ``benchmarks/data_pipeline.py`` measured it
against per-sample PNG and ``.npy`` files (see ``benchmarks/RESULTS.md``).

Building is safe against the faults met in practice (docs/reliability.md): two builds at once
(one per fingerprint at a time, under a lock; the second waits and uses the first's), a kill at any
moment (each build writes a private ``<fingerprint>.partial-XXXX/`` folder renamed into place when
complete; ``meta.json``, written last, records the row count and file sizes, checked before use),
a full disk (the size is known up front: free space checked, arrays allocated on disk), and a
read-only data root (``LAB2_CACHE_DIR`` or ``--cache-dir`` moves the caches).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.index import dataset_dir, load_split
from ..data.reading import read_sample
from ..data.resize import as_hw, resize_pair
from ..preprocess import PreprocessParams, preprocess
from . import atomic, locks
from .audit import audit_dataset
from .fingerprint import dataset_fingerprint
from .paths import CACHE_ENV, cache_dir
from .processes import usable_cpus, worker_pool

CACHE_VERSION = 2
ARRAYS = ("images.npy", "trimaps.npy")
#: What to do when the cache cannot be written where it is (no room, a read-only folder).
FIX = f"set {CACHE_ENV} (or pass --cache-dir) to a writable folder on a disk with room"

log = logging.getLogger(__name__)


def cache_root_for(root: str | os.PathLike) -> Path:
    """Cache folder of a data root: ``$LAB2_CACHE_DIR`` or ``<root>/cache``."""
    return cache_dir(root)


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

    def __init__(self, folder: str | os.PathLike, meta: dict | None = None):
        self.folder = Path(folder)
        if meta is None:
            meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        self.meta = meta
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


def verified_cache(folder: str | os.PathLike) -> SampleCache | None:
    """The cache in ``folder`` if it is complete: ``meta.json`` (written last) present, each array
    of the recorded size and row count. None for a missing, partial or damaged cache."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("version") != CACHE_VERSION:
            return None
        n, sizes = len(meta["names"]), meta["sizes"]
        for name in ARRAYS:
            if (folder / name).stat().st_size != sizes[name]:
                return None
            if np.load(folder / name, mmap_mode="r").shape[0] != n:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return SampleCache(folder, meta)


def find_cache(root: str | os.PathLike, image_size: int | tuple[int, int],
               params: PreprocessParams | None, cache_root: str | os.PathLike | None = None
               ) -> SampleCache | None:
    """The finished, verified cache for these settings, or None."""
    folder = Path(cache_root or cache_root_for(root)) / cache_fingerprint(root, image_size, params)
    return verified_cache(folder)


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


def cache_bytes(n: int, size: tuple[int, int]) -> int:
    """Disk bytes of a cache of ``n`` samples at ``size`` (both arrays, headers included)."""
    h, w = size
    return n * h * w * 4 + 2 * 4096


def _allocate(path: Path, shape: tuple) -> None:
    """Create a .npy array of zeros with its bytes reserved on disk, so that filling it through
    a memory map cannot hit a full disk (which kills the process with SIGBUS)."""
    try:
        array = np.lib.format.open_memmap(path, "w+", np.uint8, shape)
        del array   # flushed and closed: only the file is wanted here
        if hasattr(os, "posix_fallocate"):
            fd = os.open(path, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
            except OSError as e:
                if e.errno in atomic.FULL_DISK:
                    raise
                # EOPNOTSUPP / EINVAL: this file system cannot preallocate; the free-space
                # check made before the build stands
            finally:
                os.close(fd)
    except OSError as e:
        raise atomic.storage_error(path, e, FIX) from e


def _remove_abandoned_builds(base: Path) -> None:
    """Remove partial builds whose builder is gone (any variant; a live build keeps its lock)."""
    for partial in base.glob("*.partial*"):
        fingerprint = partial.name.split(".partial")[0]
        try:
            with locks.owned(base / f"{fingerprint}.lock", f"the cache {fingerprint}"):
                shutil.rmtree(partial, ignore_errors=True)
        except locks.BusyError:
            pass  # being built right now


def _remove_superseded(base: Path, root, size: tuple[int, int], params: PreprocessParams | None,
                       fingerprint: str) -> None:
    """Remove the caches of the same variant (image size, preprocessing) of the data set in the
    same folder that other data made: the files changed since, or an earlier lab2 keyed them
    otherwise. Each holds the whole data set (14 GiB for both variants at 512 px), and left in
    place they could fill the disk the new one needs. A cache in use where files in use cannot
    be moved (Windows) is left."""
    folder = dataset_dir(root).resolve()
    # as meta.json holds it (JSON has lists where the parameters have tuples)
    preprocess = json.loads(json.dumps(None if params is None else params.to_dict()))
    for meta_file in base.glob("*/meta.json"):
        old = meta_file.parent
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            same = (Path(meta["dataset"]).resolve() == folder
                    and list(meta["image_size"]) == list(size) and meta["preprocess"] == preprocess)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not same or old.name == fingerprint or ".partial" in old.name:
            continue
        try:
            with locks.owned(base / f"{old.name}.lock", f"the cache {old}"):
                doomed = base / f"{old.name}.partial-superseded"
                os.replace(old, doomed)        # no longer a cache the moment it is renamed
        except (locks.BusyError, OSError):
            continue                           # in use: left for a later build
        size_gib = sum(f.stat().st_size for f in doomed.iterdir() if f.is_file()) / 2**30
        shutil.rmtree(doomed, ignore_errors=True)   # what is left goes with the next build
        log.info("removed the cache %s (%.2f GiB): the data in %s changed since it was built, "
                 "or an earlier lab2 built it", old, size_gib, folder)


def _fsync(path: Path) -> None:
    """Flush a file to disk. Opened for writing: Windows flushes no read-only descriptor (its
    ``FlushFileBuffers`` needs write access, so every cache build failed there)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_cache(root: str | os.PathLike, image_size: int | tuple[int, int],
                params: PreprocessParams | None = None, *,
                cache_root: str | os.PathLike | None = None, workers: int | None = None,
                progress: bool = True) -> SampleCache:
    """Build (or find) the cache of every usable listed sample at ``image_size``.

    ``params=None`` stores the raw resized images; a :class:`PreprocessParams` stores them after
    the preprocessing chain (applied after resizing). Skips the files the audit skips. Safe to call
    from several processes at once: one builds, the others wait and use its result.
    """
    found = find_cache(root, image_size, params, cache_root)
    if found is not None:
        return found
    size = as_hw(image_size)
    fingerprint = cache_fingerprint(root, size, params)
    base = Path(cache_root or cache_root_for(root))
    final = base / fingerprint
    with locks.owned(base / f"{fingerprint}.lock", f"the cache {final}", wait=True, fix=FIX):
        found = verified_cache(final)   # built by the process we waited for
        if found is not None:
            return found
        _remove_abandoned_builds(base)
        _remove_superseded(base, root, size, params, fingerprint)
        if final.exists():
            log.warning("the cache %s is incomplete or damaged; building it again", final)
            shutil.rmtree(final)
        return _build(root, size, params, fingerprint, base, final, workers, progress)


def _build(root, size: tuple[int, int], params: PreprocessParams | None, fingerprint: str,
           base: Path, final: Path, workers: int | None, progress: bool) -> SampleCache:
    skipped = audit_dataset(root, progress=progress).skipped_names
    names = list(dict.fromkeys(r.name for split in ("trainval", "test")
                               for r in load_split(root, split) if r.name not in skipped))
    h, w = size
    atomic.check_free_space(base, cache_bytes(len(names), size), f"the cache {final}", FIX)
    try:
        partial = Path(tempfile.mkdtemp(prefix=f"{fingerprint}.partial-", dir=base))
    except OSError as e:
        raise atomic.storage_error(base, e, FIX) from e
    try:
        _allocate(partial / "images.npy", (len(names), h, w, 3))
        _allocate(partial / "trimaps.npy", (len(names), h, w))
        init_args = (str(partial), str(dataset_dir(root)), size, params)
        jobs = list(enumerate(names))
        label = "cache " + ("preprocessed" if params is not None else "raw") + f" {h}x{w}"
        bar = dict(total=len(jobs), desc=label, unit="img", disable=not progress)
        workers = workers or usable_cpus()
        if workers <= 1 or len(jobs) < 4 * workers:
            _init_worker(*init_args)
            try:
                for _ in tqdm(map(_fill_row, jobs), **bar):
                    pass
            finally:
                _worker_state.clear()
        else:
            with worker_pool(workers, label, _init_worker, init_args) as pool:
                for _ in tqdm(pool.map(_fill_row, jobs, chunksize=16), **bar):
                    pass
        for name in ARRAYS:
            _fsync(partial / name)
        # meta.json last: the completion marker, with what verification checks
        atomic.write_json(partial / "meta.json", {
            "version": CACHE_VERSION, "fingerprint": fingerprint, "image_size": [h, w],
            "preprocess": None if params is None else params.to_dict(),
            "dataset": str(dataset_dir(root).resolve()), "names": names,
            "sizes": {name: (partial / name).stat().st_size for name in ARRAYS},
        }, fix=FIX)
        os.chmod(partial, atomic.folder_mode())
        atomic.replace(partial, final)   # retried while a virus scanner holds a new file
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    cache = verified_cache(final)
    if cache is None:
        raise RuntimeError(f"the cache just built in {final} does not verify; delete it and run "
                           "again (a disk or file-system fault?)")
    return cache
