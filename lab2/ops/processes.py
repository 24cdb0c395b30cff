"""Worker processes: as many as the CPU cores this process may use, and dying with their parent.

The cache build and the audit decode images in a ``ProcessPoolExecutor``.

* **How many.** ``os.cpu_count()`` counts the machine's cores, not the ones a process may use: a
  SLURM job or ``taskset`` pins it to some (its affinity), and a container (``docker --cpus``, a
  JupyterHub or Kubernetes pod on a course server) gets a CPU quota. Counting ``os.cpu_count()``,
  a pod limited to 2 cores of a 64-core node would start 64 workers of about 430 MB each.
  :func:`usable_cpus` counts both, as joblib's ``loky.cpu_count`` does; Windows pools stop at 61
  workers (its limit).
* **Dying with the parent.** When the parent was SIGKILLed, its forked workers once slept forever
  waiting on a queue whose write end they had inherited themselves. Each worker now watches its
  parent and exits when it is gone. DataLoader workers need none of this: PyTorch gives them the
  same watchdog.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

#: The most workers a ``ProcessPoolExecutor`` takes on Windows.
WINDOWS_MAX_WORKERS = 61


def _cpu_quota_v2(folder: Path) -> float | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` (``"200000 100000"`` → 2.0; ``"max ..."``: none)."""
    try:
        quota, period = (folder / "cpu.max").read_text(encoding="utf-8").split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _cpu_quota_v1(folder: Path) -> float | None:
    """Cores allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none)."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def cgroup_cpu_limit(cgroup_root: str | os.PathLike = "/sys/fs/cgroup",
                     membership: str | None = None) -> float | None:
    """The CPU quota, in cores, of this process's control group and every group above it (the
    smallest); None where there is none (or no cgroups: macOS, Windows).

    ``membership`` is the text of ``/proc/self/cgroup`` (read when None). Inside a container the
    group's own path may not exist under ``cgroup_root`` (it is mounted as the root): the search
    starts at the deepest folder that does.
    """
    root = Path(cgroup_root)
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text(encoding="utf-8")
        except OSError:
            return None
    limits = []
    for line in membership.splitlines():
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:
            base, read = root, _cpu_quota_v2                            # cgroup v2
        elif "cpu" in controllers.split(","):
            base = next((root / name for name in (controllers, "cpu", "cpu,cpuacct")
                         if (root / name).is_dir()), None)
            if base is None:
                continue
            read = _cpu_quota_v1
        else:
            continue
        folder = base / path.strip("/")
        while folder != base and not folder.is_dir():
            folder = folder.parent
        while True:
            if (limit := read(folder)) is not None:
                limits.append(limit)
            if folder == base:
                break
            folder = folder.parent
    return min(limits) if limits else None


def usable_cpus() -> int:
    """The CPU cores this process may use: its affinity (``taskset``, a SLURM job's cores), capped
    by its control group's CPU quota (a container's ``--cpus``), rounded up; at least 1."""
    if hasattr(os, "process_cpu_count"):                 # Python 3.13: the affinity
        cores = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count()
    cores = cores or 1
    limit = cgroup_cpu_limit() if sys.platform.startswith("linux") else None
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def cores_each(processes: int) -> int:
    """The CPU cores each of ``processes`` processes sharing this machine's usable cores may
    use (at least 1): their PyTorch threads, or their data loader's workers."""
    return max(1, usable_cpus() // max(1, processes))


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


def die_with_parent(interval_s: float = WATCH_INTERVAL_S, parent: int | None = None) -> None:
    """End this process once its parent process has ended: ``parent``, or the process that
    started this one.

    Give ``parent`` when a forkserver started this process (its direct parent is the server,
    which lives as long as its children do). For the direct parent, on Linux the kernel does it
    (``PR_SET_PDEATHSIG``); everywhere a daemon thread also watches: an orphan is re-parented, so
    a changed ``os.getppid()`` means the parent died. Another ``parent`` is watched by its PID.
    (Windows workers are not forked and see their queue close instead.)
    """
    direct = os.getppid()
    parent = direct if parent is None else parent
    if parent == direct and sys.platform.startswith("linux"):
        _linux_parent_death_signal(parent)

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if (os.getppid() != parent) if parent == direct else not _alive(parent):
                os._exit(1)
    threading.Thread(target=watch, name="lab2-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[
            0] != "Z"
    except (OSError, IndexError):
        return True


def signal_name(exitcode: int) -> str:
    """The signal that ended a process, from its negative ``exitcode`` (``SIGKILL``), or the
    number when Python does not know it."""
    number = -exitcode
    return signal.Signals(number).name if number in signal.valid_signals() else str(number)


def _start_worker(owner: int, initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent(parent=owner)
    if initializer is not None:
        initializer(*initargs)


def pool_context() -> multiprocessing.context.BaseContext:
    """How lab2's worker pools start their processes: ``forkserver`` on Linux (Python 3.14's
    default there), ``spawn`` elsewhere (the default on macOS and Windows). Chosen here, not
    read from the program's start method: merely creating a multiprocessing lock (tqdm does)
    fixes that to the platform's default.

    Not ``fork``, Linux's default before Python 3.14: by the time a cache is built the process
    runs other threads (PyTorch's and OpenMP's after a first run, tqdm's monitor), and a fork
    copies any lock one of them holds, forever held in the child — a pool that never finishes
    (Python 3.12+ warns: "This process is multi-threaded, use of fork() may lead to
    deadlocks"). The price: about 0.2 s more per pool, whatever its work
    (``benchmarks/pool_start.py``: a cache build in 1.38 s instead of 1.19 s, in 0.57 instead of
    0.32 s), and about 16 MiB more memory per worker (``benchmarks/worker_memory.py``)."""
    return multiprocessing.get_context("forkserver" if sys.platform.startswith("linux")
                                       else "spawn")


@contextlib.contextmanager
def worker_pool(workers: int, what: str, initializer: Callable | None = None,
                initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``workers`` processes (at most 61 on Windows), started as
    :func:`pool_context` says, whose workers exit when this process dies. A worker that ends
    abruptly (killed: the out-of-memory killer, say) stops ``what`` with one line instead of the
    executor's "A process in the process pool was terminated abruptly while the future was
    running or pending"."""
    if sys.platform == "win32":
        workers = min(workers, WINDOWS_MAX_WORKERS)
    try:
        with ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=_start_worker,
                                 initargs=(os.getpid(), initializer, initargs)) as pool:
            yield pool
    except BrokenProcessPool:
        raise RuntimeError(f"a worker process of the {what} ended abruptly (killed, perhaps for "
                           "want of memory); nothing of it was kept: run the same command "
                           "again") from None
