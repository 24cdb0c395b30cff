"""Where lab2 keeps things: every default path of the project is anchored here.

From a source checkout, ``data/``, ``runs/`` and ``figures/`` sit in the checkout; an installed
package (``pip install .``) puts them under the current directory instead, never inside
site-packages; ``LAB2_HOME`` chooses the folder in both cases.

The data root follows torchvision's convention: a data set root ``DIR`` holds the extracted
Oxford-IIIT Pet set in ``DIR/oxford-iiit-pet/``. ``LAB2_DATA_DIR`` moves the default root;
``LAB2_CACHE_DIR`` (or ``--cache-dir``) moves the caches out of a data root, e.g. one that is
read-only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]     # lab2/ops/paths.py → the checkout
HOME_ENV = "LAB2_HOME"


def source_checkout() -> Path | None:
    """The source checkout lab2 runs from (``pyproject.toml`` of lab2 beside the package), or
    None when lab2 is an installed package (``pip install .``: the package sits in
    site-packages)."""
    pyproject = _PACKAGE_PARENT / "pyproject.toml"
    try:
        if pyproject.is_file() and 'name = "lab2"' in pyproject.read_text(encoding="utf-8"):
            return _PACKAGE_PARENT
    except OSError:
        pass
    return None


def home() -> Path:
    """Where ``data/``, ``runs/`` and ``figures/`` live: ``$LAB2_HOME`` if set, else the source
    checkout, else the current directory — never inside site-packages."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return source_checkout() or Path.cwd()


def default_data_root() -> Path:
    """Root of the real data set: ``$LAB2_DATA_DIR`` if set, else ``<home>/data``."""
    env = os.environ.get("LAB2_DATA_DIR")
    return Path(env).expanduser() if env else home() / "data"


def default_sample_root() -> Path:
    """Root of the generated synthetic sample: ``$LAB2_SAMPLE_DIR`` if set, else
    ``<data root>/sample``."""
    env = os.environ.get("LAB2_SAMPLE_DIR")
    return Path(env).expanduser() if env else default_data_root() / "sample"


CACHE_ENV = "LAB2_CACHE_DIR"


def cache_dir(root: str | os.PathLike) -> Path:
    """Where the caches of a data root live: ``$LAB2_CACHE_DIR`` if set, else ``<root>/cache``.

    Every cache's name includes the data set's fingerprint, so one cache folder can serve several
    data roots."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(root).expanduser() / "cache"


def figures_dir() -> Path:
    """Where notebooks save figures: ``$LAB2_FIGURES_DIR`` if set, else ``<home>/figures``."""
    env = os.environ.get("LAB2_FIGURES_DIR")
    return Path(env).expanduser() if env else home() / "figures"


def runs_dir() -> Path:
    """Where experiments go by default: ``<home>/runs``."""
    return home() / "runs"


def notebooks_dir() -> Path | None:
    """The numbered notebooks of the source checkout, or None for an installed package."""
    checkout = source_checkout()
    return checkout / "notebooks" if checkout and (checkout / "notebooks").is_dir() else None


def _moved_by(setting: str) -> str:
    """What to do about a default folder that cannot be written: the setting that moves it."""
    moves = f"{setting} or {HOME_ENV}" if setting != HOME_ENV else HOME_ENV
    return (f"set {moves} to a writable folder ({HOME_ENV} moves data/, runs/ and figures/; in a "
            f"notebook, `%env {HOME_ENV}=~/lab2-work` in a cell above), then run this again")


def check_writable(folder: Path, fix: str) -> None:
    """Make sure ``folder`` (created if missing) can be written, before any work starts; else
    raise :class:`lab2.ops.atomic.StorageError` naming it and ``fix``.

    A project opened from a read-only place (a course folder shared on a JupyterHub, a mounted
    disk) otherwise got as far as its first write, and then named a command-line flag that a
    notebook does not have.
    """
    from .atomic import storage_error
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise storage_error(folder, e, fix) from e


def check_outputs_writable(*, figures: bool = True) -> None:
    """:func:`check_writable` for ``runs/`` (and ``figures/``), the fix naming the setting that
    moves each: what a notebook's first cell and ``report`` check before any work."""
    check_writable(runs_dir(), _moved_by(HOME_ENV))
    if figures:
        check_writable(figures_dir(), _moved_by("LAB2_FIGURES_DIR"))
