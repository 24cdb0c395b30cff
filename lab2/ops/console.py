"""What a command prints: one line per error lab2 raises with its fix, one line per warning,
UTF-8 output wherever it goes, and paths quoted so that a command in a message can be pasted."""

from __future__ import annotations

import codecs
import os
import shlex
import subprocess
import sys
import warnings

from .notices import Lab2Warning

#: Errors whose message is the whole story (lab2 raises them with a fix): one line on the command
#: line (exit code 1) and in a notebook. OSError covers lab2's StorageError (full disk,
#: read-only folder) and the system's own.
EXPECTED_ERRORS = (ValueError, FileNotFoundError, RuntimeError, OSError)


def show_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning`` that prints ``lab2: <message>`` on one line, no location."""
    print(f"lab2: {' '.join(str(message).split())}", file=sys.stderr)


def one_line_warnings() -> None:
    """Show every warning as one line from now on, lab2's own each once (command-line
    processes and their workers)."""
    warnings.simplefilter("default", Lab2Warning)
    warnings.showwarning = show_one_line


def printable_output(streams=None) -> None:
    """Let standard output and error print every character lab2 writes ("−" and "→" in Table 1
    and its messages).

    Windows writes output that is redirected or piped (``python -m lab2 report > log.txt``) in
    its legacy code page (cp1252 in Western Europe and America), which has no "−": a finished
    experiment then stopped with ``'charmap' codec can't encode character '\\u2212'`` when it
    printed Table 1, before the notebooks ran. Redirected output becomes UTF-8 (what Python
    itself does from 3.15, PEP 686); a terminal whose encoding lacks a character shows "?" for
    it. UTF-8 streams (Linux, macOS, the Windows console) are left as they are.
    """
    for stream in streams or (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        if not encoding or not hasattr(stream, "reconfigure"):
            continue
        try:
            if codecs.lookup(encoding).name == "utf-8":
                continue
            if stream.isatty():
                stream.reconfigure(errors="replace")
            else:
                stream.reconfigure(encoding="utf-8")
        except (LookupError, ValueError, OSError):
            pass                         # a stream that cannot change keeps its encoding


def shell_word(value: str | os.PathLike) -> str:
    """``value`` as one word of a command the user copies from a message: quoted when it holds a
    space or another character the shell would split on (a folder under ``C:\\Users\\Jane Doe``
    or ``~/Mobile Documents``), in the quoting of this platform's shells (double quotes on
    Windows, which cmd and PowerShell both read; POSIX quoting elsewhere)."""
    text = os.fspath(value)
    return subprocess.list2cmdline([text]) if sys.platform == "win32" else shlex.quote(text)


#: Set for the ranks of ``experiment --ddp``: the experiment itself tells the user of a Ctrl-C,
#: once, instead of every command it started.
QUIET_INTERRUPT_ENV = "LAB2_QUIET_INTERRUPT"


__all__ = ["EXPECTED_ERRORS", "QUIET_INTERRUPT_ENV", "one_line_warnings", "printable_output",
           "shell_word", "show_one_line"]
