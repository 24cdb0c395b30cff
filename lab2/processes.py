"""Worker processes that die with their parent.

The cache build and the audit decode images in a ``ProcessPoolExecutor``. When the parent was
SIGKILLed, its forked workers once slept forever (about 430 MB each) waiting on a queue whose
write end they had inherited themselves. Each worker now watches its parent and exits when it is
gone. DataLoader workers need none of this: PyTorch gives them the same watchdog.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

#: How often a worker looks for its parent, in seconds.
WATCH_INTERVAL_S = 0.5


def _linux_parent_death_signal(parent: int) -> None:
    """Ask the Linux kernel to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)      # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:                      # the parent died before the request
        os._exit(1)


def die_with_parent(interval_s: float = WATCH_INTERVAL_S) -> None:
    """End this process once its parent process has ended.

    On Linux the kernel does it (``PR_SET_PDEATHSIG``). Everywhere a daemon thread also watches:
    an orphan is re-parented, so a changed ``os.getppid()`` means the parent died. (Windows
    workers are not forked and see their queue close instead.)
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        _linux_parent_death_signal(parent)

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, name="lab2-parent-watch", daemon=True).start()


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent()
    if initializer is not None:
        initializer(*initargs)


def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()
                ) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` whose workers exit when this process dies."""
    return ProcessPoolExecutor(workers, initializer=_start_worker,
                               initargs=(initializer, initargs))
