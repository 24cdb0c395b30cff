"""For tests that press Ctrl-C on a command they start.

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
