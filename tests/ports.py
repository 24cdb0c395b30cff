"""A free TCP port on this machine, for tests that start a server (JupyterLab, a process group)."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
