"""What lab2 tells its caller without stopping: warnings of these categories.

Library code does not print. It warns through :mod:`warnings`, whose default filter shows each
message once per process; the command line prints each as one line (``lab2: ...``) and a
notebook's settings cell (:func:`lab2.report.context.setup`) folds them into its banner.
Progress and status lines go through :mod:`logging` (logger ``lab2``), which the command line
shows at INFO level.
"""

from __future__ import annotations

import sys
import warnings


class Lab2Warning(UserWarning):
    """Something the user should know about the results lab2 is producing."""


class SyntheticDataWarning(Lab2Warning):
    """The real data set is absent: the synthetic sample is used, whose numbers mean nothing
    for Oxford-IIIT Pet."""


class ProfileWarning(Lab2Warning):
    """The ``auto`` profile fell back to ``quick`` (no CUDA): not the report's settings."""


class SkippedFilesWarning(Lab2Warning):
    """Files of the data set that cannot be read are left out."""


def show_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning`` that prints ``lab2: <message>`` on one line, no location."""
    print(f"lab2: {' '.join(str(message).split())}", file=sys.stderr)


def one_line_warnings() -> None:
    """Show every warning as one line from now on, lab2's own each once (command-line
    processes and their workers)."""
    warnings.simplefilter("default", Lab2Warning)
    warnings.showwarning = show_one_line


#: Set for the ranks of ``experiment --ddp``: the experiment itself tells the user of a Ctrl-C,
#: once, instead of every command it started.
QUIET_INTERRUPT_ENV = "LAB2_QUIET_INTERRUPT"


__all__ = ["QUIET_INTERRUPT_ENV", "Lab2Warning", "ProfileWarning", "SkippedFilesWarning",
           "SyntheticDataWarning", "one_line_warnings", "show_one_line"]
