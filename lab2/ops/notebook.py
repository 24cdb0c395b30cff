"""What the notebooks call around the core: the first cell (which data set and profile are in use,
where results go, errors as one line), figures saved to ``figures/``, and an experiment's
per-image results and trained models, each checked against the table that names it."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import matplotlib.pyplot as plt

from ..data.index import dataset_dir
from ..report.figures import curve_group
from .atomic import atomic_path
from .choose import choose_data_root
from .comparisons import seed_average
from .console import EXPECTED_ERRORS, show_one_line
from .evaluation import load_trained_model, read_per_image
from .experiment import default_out
from .machine import resolve_profile
from .notices import Lab2Warning, ProfileWarning, SyntheticDataWarning
from .paths import check_outputs_writable, figures_dir, home
from .sample import dataset_label


def short_path(path: str | os.PathLike) -> str:
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
        lines = [f"data set: {self.data} ({short_path(dataset_dir(self.root))})",
                 f"profile:  {self.profile}",
                 f"results:  {short_path(self.experiment)}"]
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


def _one_line_warnings() -> None:
    """lab2's warnings as one line under a cell (``lab2: ...``), as on the command line, without
    the file and line that raised them; other warnings as Python shows them."""
    shown = warnings.showwarning
    if getattr(shown, "lab2", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Lab2Warning):
            show_one_line(message, category, filename, lineno, file, line)
        else:
            shown(message, category, filename, lineno, file, line)
    show.lab2 = True
    warnings.showwarning = show


def _inline_figures() -> None:
    """Figures below their cell (``%matplotlib inline``), in IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")


def setup(profile: str | None = None) -> NotebookContext:
    """Pick the data (real if present, else the generated sample) and the profile
    (``profile`` or ``$LAB2_PROFILE`` or auto); print them and where results go, with at most
    one warning line (the library's own warnings about them are folded into it). A results or
    figures folder that cannot be written stops here, saying how to move it. From here on, an
    error lab2 raises with its fix shows as one line (:func:`one_line_errors`)."""
    one_line_errors()
    _one_line_warnings()
    _inline_figures()
    check_outputs_writable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticDataWarning)
        warnings.simplefilter("ignore", ProfileWarning)
        root = choose_data_root()
        chosen = resolve_profile(profile)
    context = NotebookContext(root, dataset_label(root), chosen, default_out(chosen, root))
    print(context.banner())
    return context


def save_figure(fig: plt.Figure, name: str, folder: str | os.PathLike | None = None) -> None:
    """Save as ``<folder>/<name>.png`` (default ``figures/``), atomically. Returns nothing, so a
    notebook cell that ends with it shows the figure and no path."""
    path = Path(folder or figures_dir()) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _by_run(runs: Sequence[dict]) -> dict[str, list[dict]]:
    """Table 1's run name (``unet_raw``), or a study's arm, → the rows of its seeds, from
    ``results.json``'s (or ``study.json``'s) ``runs``: the runs the table was made from, not
    whatever else the folder holds."""
    seeds: dict[str, list[dict]] = {}
    for row in runs:
        seeds.setdefault(curve_group(row), []).append(row)
    return seeds


def per_image_dice(experiment: str | Path, runs: Sequence[dict],
                   measure: str = "dice") -> dict[str, dict[str, float]]:
    """run → {image name → ``measure``} on the test split (Dice at the training size by
    default), each image's value averaged over the run's seeds; ``runs``: ``results.json``'s
    (checked by :func:`lab2.ops.experiment.load_experiment`). Each file read must be the one the
    row names (its SHA-256): a run tested again meanwhile raises, one line."""
    return {name: {image: values[measure] for image, values in seed_average(
                [read_per_image(Path(experiment) / row["run"], "test", row["per_image_sha256"])
                 for row in rows]).items()}
            for name, rows in _by_run(runs).items()}


def load_models(experiment: str | Path, runs: Sequence[dict]) -> dict:
    """run → (model, config) from ``best.pt`` of each run's first seed (``runs``: as in
    :func:`per_image_dice`), which must still hold the weights its row was tested with."""
    return {name: load_trained_model(Path(experiment) / rows[0]["run"] / "best.pt",
                                     sha256=rows[0]["evaluation_key"]["checkpoint_sha256"])[:2]
            for name, rows in _by_run(runs).items()}
