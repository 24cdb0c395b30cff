"""For tests that press Ctrl-C on a command they start, or kill it and look for what it left.

A shell without job control starts background commands with SIGINT ignored (``make test &`` in a
script, some CI runners), and an ignored signal stays ignored across exec: Python then installs
no KeyboardInterrupt handler, and the command never sees the Ctrl-C the test sends. Commands are
started here with the Ctrl-C of an interactive terminal, in a session of their own (so that the
test can send it to their whole process group, as a terminal does).
"""

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def default_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_until(command: list[str], ready: Callable[[], bool], env: dict | None = None,
                timeout_s: float = 120) -> subprocess.Popen:
    """Start ``command`` (stderr piped) and return it once ``ready()`` holds; fails the test if
    it ends or ``timeout_s`` passes first."""
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_ctrl_c, env=env)
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
    return proc


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: reads /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def descendants_of(pid: int) -> list[int]:
    found = children_of(pid)
    return found + [d for child in found for d in descendants_of(child)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pool_workers(pid: int) -> list[int]:
    """The worker processes of ``pid``'s pools and data loaders, however they were started: its
    children (``fork``, ``spawn``) or a forkserver's (Linux's default from Python 3.14); neither
    the servers (a cache build leaves one, idle) nor multiprocessing's resource tracker."""
    def server_or_tracker(child: int) -> bool:
        command = Path(f"/proc/{child}/cmdline").read_bytes()
        return b"resource_tracker" in command or b"multiprocessing.forkserver" in command
    return [p for p in descendants_of(pid)
            if not (p in children_of(pid) and server_or_tracker(p))]
