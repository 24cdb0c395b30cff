"""For tests that press Ctrl-C on a command they start.

A shell without job control starts background commands with SIGINT ignored (``make test &`` in a
script, some CI runners), and an ignored signal stays ignored across exec: Python then installs
no KeyboardInterrupt handler, and the command never sees the Ctrl-C the test sends. Starting it
with ``preexec_fn=default_ctrl_c`` gives it the Ctrl-C of an interactive terminal.
"""

import signal


def default_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
