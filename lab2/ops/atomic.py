"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader (or a resumed run) never sees a half-written JSON, CSV, checkpoint or cache file. Three
things this module also takes care of, each seen once as a real fault:

* the finished file gets the mode an ordinary write would give it (``0o666`` less the umask), not
  ``mkstemp``'s private ``0o600`` that other users of a shared machine cannot read;
* a full disk or a read-only folder ends in :class:`StorageError`, one sentence naming the path and
  the fix, instead of whatever the writer raised half-way (torch's ``inline_container.cc ...
  unexpected pos`` for a checkpoint);
* a temporary file left behind by a killed process (``.last.pt.abc123.tmp``) is removed by
  :func:`remove_stale_temporaries` when its folder's next owner starts;
* on Windows, a file cannot be replaced while another program has it open: a virus scanner
  looking at the new file for a moment (the rename is retried for a few seconds, as pip does), or
  ``results.csv`` open in a spreadsheet (then one sentence says to close it; the old file is
  intact). Tested here by raising Windows' error at the rename; not run on Windows.

Because a file is only ever replaced whole, one read of it is one version: :func:`read_exact`
checks and returns the bytes of the version a result names.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: errno values that mean "this folder cannot be written": the fix is another folder.
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
FULL_DISK = (errno.ENOSPC, errno.EDQUOT) if hasattr(errno, "EDQUOT") else (errno.ENOSPC,)
#: Windows' "access denied" and "used by another process": the target of a rename is open
#: elsewhere (Windows locks open files against replacement).
IN_USE_WINERRORS = (5, 32)
#: How long a rename onto a file in use is retried, and the wait between tries.
IN_USE_RETRY_S, IN_USE_WAIT_S = 3.0, 0.25
_clock, _sleep = time.monotonic, time.sleep       # what the retry waits with (tests replace them)


class InUseError(PermissionError):
    """Windows kept refusing a rename for :data:`IN_USE_RETRY_S`: a file of it is in use."""


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


def sizes(*numbers: float) -> list[str]:
    """Byte counts in one unit (the largest's: KiB, MiB or GiB) with the fewest decimals (at
    least one) that keep different numbers apart: ``10.0 MiB`` and ``73.0 MiB``, not
    ``0.01 GiB`` twice."""
    top = max(numbers)
    unit, scale = (("GiB", 2**30) if top >= 2**30 else ("MiB", 2**20) if top >= 2**20
                   else ("KiB", 2**10))
    for decimals in range(1, 5):
        shown = [f"{n / scale:.{decimals}f} {unit}" for n in numbers]
        if len(set(shown)) == len(set(numbers)):
            break
    return shown


def file_size_limit() -> int | None:
    """The largest file this process may write (``ulimit -f``, RLIMIT_FSIZE), or None: none."""
    try:
        import resource
    except ImportError:          # Windows has no such limit
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(next(p for p in [path, *path.parents] if p.exists())).free
    except (OSError, StopIteration):
        return None


def storage_error(path: str | os.PathLike, error: BaseException, fix: str = "") -> StorageError:
    """A :class:`StorageError` for a failed write of ``path``, with the fix for its cause."""
    path = Path(path)
    code = getattr(error, "errno", None)
    text = str(error)
    short_write = code is None and ("unexpected pos" in text or "file write failed" in text)
    limit = file_size_limit() if code == errno.EFBIG or short_write else None
    free = _free_bytes(path) if code in FULL_DISK or code == errno.EFBIG or short_write else None
    if code == errno.EFBIG and limit is None:
        limit_words = ("the largest file this file system holds (FAT32: 4 GiB) or a file-size "
                       "limit (ulimit -f)")
    else:
        limit_words = f"this process's file-size limit of {sizes(limit)[0]}" if limit else ""
    if isinstance(error, InUseError):
        why = ("Windows cannot replace it while another program has it open (or while it is "
               "marked read-only)")
        fix = ("close it there (a spreadsheet, an editor, a viewer) and run the command again; "
               "the old file is unchanged")
    elif limit_words and (code == errno.EFBIG or (free or 0) > SPARE_BYTES):
        # torch's refused write carries no errno: with room on the disk and a limit set, the
        # limit is what refused it (SIGXFSZ is ignored by Python, so the write fails instead)
        why = f"the file would grow past {limit_words}"
        fix = ("raise the limit (ulimit -f unlimited, or ask the cluster's administrators) and "
               "run the command again" + ("" if limit else ", or write to another disk"))
    elif code in FULL_DISK or short_write or "No space left" in text:
        room = f" ({sizes(free)[0]} free)" if free is not None else ""
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


#: Room left free beyond what a write needs (the file system's own bookkeeping, logs).
SPARE_BYTES = 64 * 2**20


def check_free_space(folder: str | os.PathLike, need: int, what: str, fix: str) -> None:
    """Raise :class:`StorageError` before writing ``need`` bytes into ``folder`` when its disk
    lacks them (with :data:`SPARE_BYTES` to spare): ``"<what> needs 1.2 GiB but <folder> has
    0.5 GiB free; free some space, or <fix>"``."""
    free = shutil.disk_usage(folder).free
    if free < need + SPARE_BYTES:
        needed, has = sizes(need, free)
        raise StorageError(errno.ENOSPC, f"{what} needs {needed} but {folder} has {has} free; "
                                         f"free some space, or {fix}")


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
        replace(tmp_path, path)
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


def replace(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """``os.replace``, retried for :data:`IN_USE_RETRY_S` while Windows says a file of either is
    in use (a virus scanner reading a new file lets go within a second)."""
    deadline = _clock() + IN_USE_RETRY_S
    while True:
        try:
            os.replace(source, target)
            return
        except PermissionError as e:
            if getattr(e, "winerror", None) not in IN_USE_WINERRORS:
                raise
            if _clock() >= deadline:
                raise InUseError(e.errno, e.strerror, e.filename) from e
        _sleep(IN_USE_WAIT_S)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Content hash of a file, SHA-256 unless another of hashlib's ``algorithm`` is asked for (an
    archive's published md5): identifies exactly which weights or data a result belongs to."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ChangedSince(ValueError):
    """A file no longer holds the content a result was made from."""


def read_exact(path: str | os.PathLike, sha256: str) -> bytes:
    """The bytes of ``path`` if their SHA-256 is ``sha256``, else :class:`ChangedSince`.

    One read of one open file: lab2 replaces its files atomically (a new file renamed over the
    old), so the bytes checked are the bytes used, even while another command rewrites the file.
    Checking a file and then opening it again would leave a moment for another version."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ChangedSince(f"{path} changed after the results naming it were checked (a command "
                           "training or testing that run at the same time?); once it has "
                           "finished, run this again")
    return data


class DamagedRecord(ValueError):
    """A JSON record lab2 wrote is no longer JSON (cut short by a copy, edited by hand)."""


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON in ``path``; :class:`DamagedRecord` naming the file and ``fix`` when it is not
    JSON (a JSONDecodeError's traceback said neither)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedRecord(f"{path} is damaged (not readable as JSON: {e}); {fix}") from None


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


def csv_text(rows: Iterable[dict], fields: Iterable[str]) -> str:
    """``rows`` as CSV text with the columns ``fields`` (a row's other keys are left out)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_texts(folder: str | os.PathLike, texts: dict[str, str], fix: str = "") -> dict[str, str]:
    """Write each text of ``texts`` to ``folder/<name>``; return each name's SHA-256, of the
    bytes written, for the record that names them (written after them: a reader then tells
    them from files an interrupted rewrite left)."""
    digests = {}
    for name, text in texts.items():
        data = text.encode("utf-8")
        write_bytes(Path(folder) / name, data, fix)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.*.tmp`` files a killed writer left in ``folder``; return them.

    Call it only while holding the folder's lock (:mod:`lab2.ops.locks`): a live writer's temporary
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
