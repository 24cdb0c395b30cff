"""Where lab2 keeps things: every default path of the project is anchored here.

The data root follows torchvision's convention: a data set root ``DIR`` holds the extracted
Oxford-IIIT Pet set in ``DIR/oxford-iiit-pet/``. ``LAB2_DATA_DIR`` moves the default root;
``LAB2_CACHE_DIR`` (or ``--cache-dir``) moves the caches out of a data root, e.g. one that is
read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Folder name of the data set inside a data root (torchvision's convention).
DATASET_FOLDER = "oxford-iiit-pet"


def default_data_root() -> Path:
    """Root of the real data set: ``$LAB2_DATA_DIR`` if set, else ``<project>/data``."""
    env = os.environ.get("LAB2_DATA_DIR")
    return Path(env).expanduser() if env else PROJECT_ROOT / "data"


def default_sample_root() -> Path:
    """Root of the generated synthetic sample: ``<data root>/sample``."""
    return default_data_root() / "sample"


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
    """Where notebooks save figures: ``$LAB2_FIGURES_DIR`` if set, else ``<project>/figures``."""
    env = os.environ.get("LAB2_FIGURES_DIR")
    return Path(env).expanduser() if env else PROJECT_ROOT / "figures"


def runs_dir() -> Path:
    return PROJECT_ROOT / "runs"
