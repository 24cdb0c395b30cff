"""Which data set a run, a cache, an audit and a Table 1 belong to: the data set's fingerprint.

The fingerprint hashes the name, size and **content** (SHA-256) of every file of the data set:
``images/``, ``annotations/trimaps/`` and ``annotations/`` (the split lists). Every result records
it, and every command that continues or shows a result checks it. Names and sizes alone miss an
edit that keeps a file's size (``sort trainval.txt`` moves images between training and validation).

Reading the whole data set (800 MB for Oxford-IIIT Pet) at every command would cost seconds, so
each file's hash is remembered, as git's index does, in the cache folder
(``<root>/cache/file-hashes-<folder>.json``, or under ``$LAB2_CACHE_DIR``) beside its size,
modification time, status-change time (which no program can set back) and inode: a file whose
four are unchanged is not read again. A file changed in the last :data:`RECENT_S` seconds is not
remembered, since two writes within one tick of a file system's clock leave the same times. A copy
on another machine gets the same fingerprint (what lets the machines of one run compare their
data). Where the cache folder cannot be written, the hashes are computed each time.

Runs, tables and folders recorded by the earlier lab2 hold the names-and-sizes fingerprint. They
are still accepted (:func:`same_data`), with the guarantee they were made with, and recorded by
content from then on: an experiment folder at its next command, a run at its next epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from ..data.index import dataset_dir
from . import atomic
from .paths import cache_dir

#: The folders of a data set whose files the fingerprint covers (their own files, not subfolders).
PARTS = ("images", "annotations/trimaps", "annotations")
#: A file modified less than this many seconds ago is hashed again next time (its times may not
#: yet tell a later write of the same size apart: FAT's clock has 2 s ticks).
RECENT_S = 3.0
#: Hashing more bytes than this shows a progress bar (the first command on the real data).
BAR_BYTES = 256 * 2**20
#: Threads that hash files at once (hashlib lets go of the GIL; ``benchmarks/fingerprint.py``).
THREADS = 2
MEMO_VERSION = 1

#: Hashes this process computed: (path, stat key) -> SHA-256, kept like the memo file.
_seen: dict[tuple[str, tuple], str] = {}


def _files(root) -> list[tuple[str, Path, os.stat_result]]:
    """(name relative to the data set, path, stat) of every file the fingerprint covers, sorted.
    One ``stat`` per file (``os.scandir``): 15,000 files of the real data set at every command."""
    folder = dataset_dir(root)
    found = []
    for part in PARTS:
        try:
            with os.scandir(folder / part) as entries:
                files = [(e.name, st) for e in entries if (st := _file_stat(e)) is not None]
        except (FileNotFoundError, NotADirectoryError):
            continue
        found += [(f"{part}/{name}", folder / part / name, st) for name, st in sorted(files)]
    return found


def _file_stat(entry: os.DirEntry) -> os.stat_result | None:
    """The stat of a file, or None for anything else: a folder, a symbolic link that leads
    nowhere or in a loop (the audit lists those; a loop raised ELOOP here and stopped every
    command)."""
    try:
        return entry.stat() if entry.is_file() else None
    except OSError:
        return None


def _utf8(text: str) -> bytes:
    """A file name as bytes: a name that is not valid UTF-8 (a file copied from an old Windows
    or Mac disk) keeps its original bytes instead of stopping every command."""
    return text.encode("utf-8", "surrogateescape")


def names_and_sizes_fingerprint(root: str | os.PathLike) -> str:
    """The fingerprint lab2 recorded before it hashed content: names and sizes only."""
    digest = hashlib.sha1()
    for name, _, st in _files(root):
        digest.update(_utf8(f"{name}\0{st.st_size}\n"))
    return digest.hexdigest()[:16]


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    # on Windows st_ctime is the creation time and os.scandir gives no inode (0): there the
    # size and the modification time (NTFS: 100 ns ticks) tell a file changed
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns if os.name != "nt" else 0, st.st_ino)


def _is_recent(key: tuple, now_ns: int) -> bool:
    return max(key[1], key[2]) > now_ns - RECENT_S * 1e9


def memo_path(root: str | os.PathLike) -> Path:
    """The file that remembers the hashes of the data set under ``root``."""
    folder = str(dataset_dir(root).resolve())
    return cache_dir(root) / f"file-hashes-{hashlib.sha1(_utf8(folder)).hexdigest()[:16]}.json"


def _read_memo(path: Path) -> dict[str, list]:
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
        if memo.get("version") != MEMO_VERSION or not isinstance(memo.get("files"), dict):
            return {}
        return memo["files"]
    except (OSError, ValueError, AttributeError):
        return {}                    # none yet, unreadable or damaged: hash again


def file_hashes(root: str | os.PathLike, *, threads: int = THREADS, remember: bool = True,
                progress: bool = True) -> dict[str, tuple[int, str]]:
    """Name -> (size, SHA-256) of every file the fingerprint covers. Files whose size, times and
    inode are remembered are not read; the others are hashed by ``threads`` threads and, with
    ``remember``, remembered."""
    listed = _files(root)
    files = [(name, path) for name, path, _ in listed]
    keys = {name: _stat_key(st) for name, _, st in listed}
    hashes: dict[str, str] = {}
    if remember:                 # what this process hashed or read already, then the memo file
        hashes = {name: _seen[(str(path), keys[name])] for name, path in files
                  if (str(path), keys[name]) in _seen}
    memo_file = memo_path(root)
    memo = _read_memo(memo_file) if remember and len(hashes) < len(files) else None
    todo = []
    for name, path in files:
        if name in hashes:
            continue
        entry = (memo or {}).get(name)
        if (isinstance(entry, list) and len(entry) == 5 and tuple(entry[:4]) == keys[name]
                and isinstance(entry[4], str)):
            hashes[name] = entry[4]
        else:
            todo.append((name, path))
    if todo:
        total = sum(keys[name][0] for name, _ in todo)
        with tqdm(total=total, unit="B", unit_scale=True, leave=False,
                  desc="reading the data set once (its fingerprint)",
                  disable=not progress or total < BAR_BYTES) as bar:
            def hash_part(part: list[tuple[str, Path]]) -> list[tuple[str, str]]:
                done = []
                for name, path in part:
                    try:
                        done.append((name, atomic.file_digest(path)))
                    except OSError as e:   # the audit names it and skips its sample
                        done.append((name, f"unreadable: {e.strerror or e}"))
                    bar.update(keys[name][0])
                return done
            # one share of the files per thread: a task per file costs more than it hashes
            parts = [todo[i::threads] for i in range(max(1, min(threads, len(todo))))]
            if len(parts) == 1:
                hashes.update(hash_part(parts[0]))
            else:
                with ThreadPoolExecutor(len(parts)) as pool:
                    for done in pool.map(hash_part, parts):
                        hashes.update(done)
    now = time.time_ns()
    settled = {name: [*keys[name], hashes[name]] for name, _ in files
               if not _is_recent(keys[name], now) and not hashes[name].startswith("unreadable")}
    if remember:
        _seen.update(((str(path), keys[name]), hashes[name]) for name, path in files
                     if name in settled)
        if memo is not None and settled != memo:
            try:
                atomic.write_json(memo_file, {"version": MEMO_VERSION,
                                              "folder": str(dataset_dir(root).resolve()),
                                              "files": settled})
            except OSError:
                pass       # a read-only or full cache folder: hashed again next time, no harm
    return {name: (keys[name][0], hashes[name]) for name, _ in files}


def dataset_fingerprint(root: str | os.PathLike, *, progress: bool = True) -> str:
    """Hash (16 hex digits) of the name, size and content of every file of the data set under
    ``root`` (images, trimaps, split lists)."""
    digest = hashlib.sha1(b"content\n")
    for name, (size, sha256) in file_hashes(root, progress=progress).items():
        digest.update(_utf8(f"{name}\0{size}\0{sha256}\n"))
    return digest.hexdigest()[:16]


def same_data(recorded: str | None, fingerprint: str, root: str | os.PathLike) -> bool:
    """Whether a fingerprint recorded with a result names the data set under ``root``, whose
    fingerprint is ``fingerprint``: the same, or the names-and-sizes fingerprint of the same files
    that the earlier lab2 recorded."""
    return recorded == fingerprint or (
        recorded is not None and recorded == names_and_sizes_fingerprint(root))


__all__ = ["dataset_fingerprint", "file_hashes", "memo_path", "names_and_sizes_fingerprint",
           "same_data"]
