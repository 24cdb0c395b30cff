"""Facts about a data set for the inspection notebook: split sizes, breeds, image sizes."""

from __future__ import annotations

import os
from collections.abc import Collection

from .index import SPLITS, Record, dataset_dir, load_split
from .reading import image_path, image_size_of


def usable_records(root: str | os.PathLike, split: str, skip: Collection[str] = ()
                   ) -> list[Record]:
    """The records of ``split`` but the samples in ``skip`` (the audit's skipped names)."""
    return [r for r in load_split(root, split) if r.name not in skip]


def split_sizes(root: str | os.PathLike, skip: Collection[str] = ()) -> dict[str, dict[str, int]]:
    """Per split: images listed, and images usable once the samples in ``skip`` are left out."""
    return {split: {"listed": len(load_split(root, split)),
                    "usable": len(usable_records(root, split, skip))} for split in SPLITS}


def image_sizes(root: str | os.PathLike, records: list[Record]) -> list[tuple[int, int]]:
    """(width, height) of each record's image, from the file headers."""
    folder = dataset_dir(root)
    return [image_size_of(image_path(folder, r.name)) for r in records]
