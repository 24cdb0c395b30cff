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
from pathlib import Path

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent
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

#: Folder name of the data set inside a data root (torchvision's convention).
DATASET_FOLDER = "oxford-iiit-pet"


def default_data_root() -> Path:
    """Root of the real data set: ``$LAB2_DATA_DIR`` if set, else ``<home>/data``."""
    env = os.environ.get("LAB2_DATA_DIR")
    return Path(env).expanduser() if env else home() / "data"


def default_sample_root() -> Path:
    """Root of the generated synthetic sample: ``$LAB2_SAMPLE_DIR`` if set, else
    ``<data root>/sample``."""
    env = os.environ.get("LAB2_SAMPLE_DIR")
    return Path(env).expanduser() if env else default_data_root() / "sample"


def dataset_dir(root: str | os.PathLike) -> Path:
    """The folder holding ``images/`` and ``annotations/`` under a data root."""
    return Path(root).expanduser() / DATASET_FOLDER


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
