"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader (or a resumed run) never sees a half-written JSON, CSV, checkpoint or cache file. Three
things this module also takes care of, each seen once as a real fault:

* the finished file gets the mode an ordinary write would give it (``0o666`` less the umask), not
  ``mkstemp``'s private ``0o600`` that other users of a shared machine cannot read;
* a full disk or a read-only folder ends in :class:`StorageError`, one sentence naming the path and
  the fix, instead of whatever the writer raised half-way (torch's ``inline_container.cc ...
  unexpected pos`` for a checkpoint);
* a temporary file left behind by a killed process (``.last.pt.abc123.tmp``) is removed by
  :func:`remove_stale_temporaries` when its folder's next owner starts.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: errno values that mean "this folder cannot be written": the fix is another folder.
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
FULL_DISK = (errno.ENOSPC, errno.EDQUOT) if hasattr(errno, "EDQUOT") else (errno.ENOSPC,)


class StorageError(OSError):
    """A write failed because of the disk or the folder (full, read-only), said in one sentence."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` would give a new folder under the current umask."""
    return 0o777 & ~_umask()


def storage_error(path: str | os.PathLike, error: BaseException, fix: str = "") -> StorageError:
    """A :class:`StorageError` for a failed write of ``path``, with the fix for its cause."""
    path = Path(path)
    code = getattr(error, "errno", None)
    if code in FULL_DISK or "unexpected pos" in str(error) or "No space left" in str(error):
        try:
            free = shutil.disk_usage(next(p for p in [path, *path.parents] if p.exists())).free
            room = f" ({free / 2**20:.0f} MiB free)"
        except (OSError, StopIteration):
            room = ""
        why = f"the disk is full{room}"
        fix = fix or "free some space there, or write to another disk"
    elif code in _READ_ONLY:
        why = "the folder is read-only or not writable by you"
        fix = fix or "choose a writable folder"
    else:
        why = str(getattr(error, "strerror", None) or error)
        fix = fix or "check the folder and try again"
    result = StorageError(code or errno.EIO, f"cannot write {path}: {why}; {fix}")
    result.filename = str(path)
    return result


@contextmanager
def atomic_path(path: str | os.PathLike, fix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    An ``OSError`` (or torch's RuntimeError for a short write) raised while writing becomes a
    :class:`StorageError` naming ``path`` and ``fix``; the temporary file is always removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise storage_error(path, e, fix) from e
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    except StorageError:
        raise
    except OSError as e:
        raise storage_error(path, e, fix) from e
    except RuntimeError as e:
        if "unexpected pos" in str(e) or "No space left" in str(e) or "file write failed" in str(e):
            raise storage_error(path, e, fix) from e
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, fix: str = "") -> None:
    with atomic_path(path, fix) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str, fix: str = "") -> None:
    write_bytes(path, text.encode("utf-8"), fix)


def write_json(path: str | os.PathLike, obj: Any, fix: str = "") -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", fix)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.*.tmp`` files a killed writer left in ``folder``; return them.

    Call it only while holding the folder's lock (:mod:`lab2.locks`): a live writer's temporary
    file has the same shape.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed
