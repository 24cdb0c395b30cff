"""One writer at a time: locks on run folders, experiment folders, cache builds and the sample.

Two commands writing the same run folder at once once left a UNet ``last.pt`` beside a
ResNet34-UNet ``best.pt``, both exiting 0; two cache builds once left a cache of zeros marked
ready. Every folder that a later step trusts is therefore written under an exclusive lock:

* the lock is an operating-system file lock (``fcntl.flock`` on Linux and macOS, ``msvcrt`` on
  Windows) taken through the maintained ``filelock`` package, so the kernel releases it when its
  process ends, SIGKILL included: a killed owner never leaves a lock that blocks ``--resume``;
* beside the lock file, ``<lock>.owner`` names the owner's PID and command, so the process that is
  refused (or waits) can say who holds the folder.

:func:`owned` refuses at once (a run or experiment folder: the second command is a mistake);
:func:`owned` with ``wait=True`` waits with a message (a cache or the sample: the second command
can use what the first one builds).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from . import atomic

log = logging.getLogger(__name__)

LOCK_NAME = ".lab2.lock"
#: What a file system that cannot lock files answers (some network and cloud-drive mounts).
NO_LOCKS = frozenset({errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP,
                      getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)})

#: Locks this thread holds: taking one again (the experiment evaluating a run that train() just
#: released and retook, say) nests instead of refusing itself.
_held: set[tuple[str, int]] = set()


class BusyError(RuntimeError):
    """Another live process owns the folder."""


def _file_lock(path: Path) -> FileLock:
    try:   # filelock >= 3.19: never fall back to a lock file that outlives its process
        return FileLock(str(path), fallback_to_soft=False)
    except TypeError:
        return FileLock(str(path))


def owner_of(lock_path: str | os.PathLike) -> str:
    """Who holds a lock, as its owner file says: ``"PID 1234 (python -m lab2 train ...)"``."""
    try:
        info = json.loads(Path(f"{lock_path}.owner").read_text(encoding="utf-8"))
        return f"PID {info['pid']} ({info['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def _command() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return " ".join(argv)[:200]


@contextmanager
def owned(lock_path: str | os.PathLike, what: str, *, wait: bool = False,
          poll_s: float = 0.5, fix: str = "") -> Iterator[None]:
    """Hold the exclusive lock ``lock_path`` for the block.

    ``what`` names the thing locked for the messages (``"run folder runs/x"``). Without ``wait`` a
    lock held by a live process raises :class:`BusyError` at once; with ``wait`` a message says who
    is being waited for, and the block runs once they are done. A folder where the lock cannot
    be created raises :class:`lab2.ops.atomic.StorageError` with ``fix``.
    """
    lock_path = Path(lock_path)
    key = (str(lock_path.resolve()), threading.get_ident())
    if key in _held:
        yield
        return
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = _file_lock(lock_path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = owner_of(lock_path)
            if not wait:
                raise BusyError(f"{what} is in use by {holder}; wait for it to finish, or use "
                                "another folder") from None
            log.warning("waiting for %s, which is writing %s ...", holder, what)
            started = time.monotonic()
            lock.acquire(timeout=-1, poll_interval=poll_s)
            log.warning("%s is free after %.0f s", what, time.monotonic() - started)
    except OSError as e:
        if e.errno in NO_LOCKS:
            raise atomic.StorageError(e.errno, (
                f"cannot lock {lock_path}: the file system of {lock_path.parent} cannot lock "
                f"files ({e.strerror or e}), as some network and cloud-drive mounts cannot, and "
                f"lab2 locks {what} so that two commands never write it at once; use a folder on "
                f"a local disk ({fix or 'LAB2_HOME moves data/, runs/ and figures/'})")) from e
        raise atomic.storage_error(lock_path, e, fix) from e
    _held.add(key)
    try:
        try:
            atomic.write_json(f"{lock_path}.owner", {"pid": os.getpid(), "command": _command()})
        except OSError:
            pass  # the name is for messages only; the lock itself is held
        yield
    finally:
        _held.discard(key)
        lock.release()


def folder_lock(folder: str | os.PathLike) -> Path:
    """The lock file of a run or experiment folder."""
    return Path(folder) / LOCK_NAME


def own_folder(folder: str | os.PathLike, what: str = "run folder",
               fix: str = "choose a writable --out folder"):
    """:func:`owned` for a run, experiment or study folder (``what``)."""
    return owned(folder_lock(folder), f"the {what} {folder}", fix=fix)
