"""Which data set a command or notebook uses: the real one when present, else the sample."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..data.index import dataset_dir
from .download import DownloadError, UnfinishedDownload, check_extracted, download_oxford_pet
from .notices import SyntheticDataWarning
from .paths import default_data_root, default_sample_root
from .sample import is_sample, make_sample_dataset


def missing_dataset(root: str | os.PathLike) -> str | None:
    """Why ``root`` does not hold the data set whole (its list of training images, and no archive
    whose extraction was interrupted), or None when it does."""
    if not (dataset_dir(root) / "annotations" / "trainval.txt").is_file():
        return f"no real data set in {dataset_dir(root)}"
    try:
        check_extracted(dataset_dir(root))
    except UnfinishedDownload as e:
        return str(e)
    return None


def choose_data_root(root: str | os.PathLike | None = None,
                     sample_root: str | os.PathLike | None = None, *,
                     try_download: bool = False) -> Path:
    """The real data root when it holds the data set (or, with ``try_download``, once it has been
    downloaded); otherwise the synthetic sample, with a loud warning: the one ``sample_root``
    holds, whatever settings it was made with (``python -m lab2 sample`` made it; replacing it
    would delete what is there), or the default one, generated."""
    root = Path(root or default_data_root())
    sample_root = Path(sample_root or default_sample_root())
    missing = missing_dataset(root)
    if missing is None:
        return root
    why = ""
    if try_download:
        try:
            download_oxford_pet(root, retries=2)
            return root
        except DownloadError as e:
            why = f" (the download failed: {e})"
    warnings.warn(f"{missing}{why}; using the SYNTHETIC sample in "
                  f"{dataset_dir(sample_root)}: its numbers say nothing about Oxford-IIIT Pet",
                  SyntheticDataWarning, stacklevel=1)
    if not is_sample(sample_root):
        make_sample_dataset(sample_root)
    return sample_root
