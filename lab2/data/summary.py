"""Facts about a data set for the inspection notebook: split sizes, breeds, image sizes."""

from __future__ import annotations

import os

from ..paths import dataset_dir
from .audit import audit_dataset
from .index import SPLITS, Record, load_split
from .reading import image_path, image_size_of


def usable_records(root: str | os.PathLike, split: str) -> list[Record]:
    skipped = audit_dataset(root, progress=False).skipped_names
    return [r for r in load_split(root, split) if r.name not in skipped]


def split_sizes(root: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Per split: images listed and images usable after the audit."""
    return {split: {"listed": len(load_split(root, split)),
                    "usable": len(usable_records(root, split))} for split in SPLITS}


def image_sizes(root: str | os.PathLike, records: list[Record]) -> list[tuple[int, int]]:
    """(width, height) of each record's image, from the file headers."""
    folder = dataset_dir(root)
    return [image_size_of(image_path(folder, r.name)) for r in records]
