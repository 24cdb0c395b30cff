"""The first cell of every notebook: which data set and profile are in use, and where results go."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..config import resolve_profile
from ..data import choose_data_root
from ..data.sample import dataset_label
from ..experiment import default_out
from ..notices import EXPECTED_ERRORS, ProfileWarning, SyntheticDataWarning
from ..paths import check_outputs_writable, dataset_dir, home


def shown(path: str | os.PathLike) -> str:
    """A path as a reader wants it: relative to the project folder when inside it."""
    path = Path(path).expanduser().resolve()
    try:
        return str(path.relative_to(home().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class NotebookContext:
    root: Path          # data root (real set or synthetic sample)
    data: str           # "Oxford-IIIT Pet" or "synthetic sample" — stamped on every figure
    profile: str        # full | quick | smoke
    experiment: Path    # the experiment folder of this data set and profile

    @property
    def synthetic(self) -> bool:
        return self.data == "synthetic sample"

    def warning(self) -> str | None:
        """One line saying how far these results are from the report's, or None."""
        problems = []
        if self.synthetic:
            problems.append("the SYNTHETIC sample (no real data set found): its numbers say "
                            "nothing about Oxford-IIIT Pet")
        if self.profile != "full":
            problems.append(f"profile '{self.profile}' (smaller images, networks and subsets): "
                            "not the report's setup; LAB2_PROFILE=full runs the report's")
        return "WARNING: " + "; ".join(problems) if problems else None

    def banner(self) -> str:
        lines = [f"data set: {self.data} ({shown(dataset_dir(self.root))})",
                 f"profile:  {self.profile}",
                 f"results:  {shown(self.experiment)}"]
        warning = self.warning()
        return "\n".join(lines + ([warning] if warning else []))


PACKAGE = Path(__file__).resolve().parent.parent


def _in_lab2(tb: TracebackType | None) -> list[bool]:
    """For each frame of ``tb``, outermost first: whether it runs lab2's own code."""
    return [Path(frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)
            for frame, _ in traceback.walk_tb(tb)]


def raised_by_lab2(tb: TracebackType | None) -> bool:
    """Whether the innermost frame of ``tb`` is lab2's own code (it raised the error itself)."""
    frames = _in_lab2(tb)
    return bool(frames) and frames[-1]


def one_line_errors(shell=None) -> None:
    """In a notebook (IPython ``shell``, default the running one), show an error lab2 raised
    itself with its fix as that one line, as the command line does, and a Ctrl-C (Kernel ›
    Interrupt) during lab2's work as one line saying that running the cells again goes on,
    instead of a traceback through lab2's and PyTorch's internals; ``%tb`` still shows the
    traceback. Errors from elsewhere keep theirs."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return
        shell = get_ipython()
        if shell is None:
            return

    def show(shell, etype, value, tb, tb_offset=None):
        # IPython calls this instead of showing the error (and ignores what it returns)
        if issubclass(etype, KeyboardInterrupt) and any(_in_lab2(tb)):
            lines = ["KeyboardInterrupt: stopped; what lab2 had saved is kept, and the "
                     "notebook's cells go on from there when run again"]
        elif not issubclass(etype, KeyboardInterrupt) and raised_by_lab2(tb):
            lines = [f"{etype.__name__}: {' '.join(str(value).split())}"]
        else:
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return None
        sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb     # for %tb
        if sys.version_info >= (3, 12):
            sys.last_exc = value
        lines.append("(%tb shows where it was raised)")
        shell._showtraceback(etype, value, lines)     # the kernel's: an error output, as usual
        return lines
    shell.set_custom_exc((*EXPECTED_ERRORS, KeyboardInterrupt), show)


def setup(profile: str | None = None) -> NotebookContext:
    """Pick the data (real if present, else the generated sample) and the profile
    (``profile`` or ``$LAB2_PROFILE`` or auto); print them and where results go, with at most
    one warning line (the library's own warnings about them are folded into it). A results or
    figures folder that cannot be written stops here, saying how to move it. From here on, an
    error lab2 raises with its fix shows as one line (:func:`one_line_errors`)."""
    one_line_errors()
    check_outputs_writable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticDataWarning)
        warnings.simplefilter("ignore", ProfileWarning)
        root = choose_data_root()
        chosen = resolve_profile(profile)
    context = NotebookContext(root, dataset_label(root), chosen, default_out(chosen, root))
    print(context.banner())
    return context
