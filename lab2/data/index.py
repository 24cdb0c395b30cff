"""The data set's index: the 37 breeds, the annotation list files, and the train/val/test splits.

A list line is ``Image CLASS-ID SPECIES BREED-ID`` (class 1–37, species 1 = cat, 2 = dog, breed id
counted within the species). ``list.txt`` has the same format after ``#`` header lines.

Splits follow the course's starter code: ``test`` is ``test.txt``; of ``trainval.txt``, every 10th
line (index % 10 == 0) is ``val`` and the rest ``train`` — 3312 / 368 / 3669 on the real set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The 37 breeds in class-id order (class id = position + 1). Capitalised names are cats.
BREEDS: tuple[str, ...] = (
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
    "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees",
    "havanese", "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher",
    "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard",
    "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
)
CAT, DOG = 1, 2
SPLITS = ("train", "val", "trainval", "test")
SUBSETS = ("spread", "first")  # how a split is cut to a profile's size (:func:`subset`)
VAL_EVERY = 10  # every 10th trainval line (index % 10 == 0) is validation


def species_of(breed: str) -> int:
    return CAT if breed[0].isupper() else DOG


def breed_id_of(breed: str) -> int:
    """Breed id within its species (1–12 for cats, 1–25 for dogs), in class-id order."""
    same = [b for b in BREEDS if species_of(b) == species_of(breed)]
    return same.index(breed) + 1


def breed_of(name: str) -> str:
    """``'Egyptian_Mau_139'`` → ``'Egyptian_Mau'``."""
    return name.rsplit("_", 1)[0]


@dataclass(frozen=True)
class Record:
    """One line of a list file."""

    name: str       # file stem, e.g. "Abyssinian_1"
    class_id: int   # 1–37
    species: int    # 1 = cat, 2 = dog
    breed_id: int   # 1–12 (cats) or 1–25 (dogs)

    @property
    def breed(self) -> str:
        return BREEDS[self.class_id - 1]

    def line(self) -> str:
        return f"{self.name} {self.class_id} {self.species} {self.breed_id}"


def parse_list(text: str, source: str = "list") -> list[Record]:
    """Parse a list file's text; ``#`` lines and blank lines are skipped."""
    records = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            name, class_id, species, breed_id = parts[0], *map(int, parts[1:4])
        except (ValueError, IndexError):
            raise ValueError(
                f"{source}, line {number}: expected 'Image CLASS-ID SPECIES BREED-ID', got "
                f"{raw!r}. Is the annotations folder from the official annotations.tar.gz?"
            ) from None
        records.append(Record(name, class_id, species, breed_id))
    return records


def read_list(path: str | os.PathLike) -> list[Record]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing. Run `python -m lab2 download --root DIR` for the real data set "
            "or `python -m lab2 sample --root DIR` for the synthetic sample.")
    return parse_list(path.read_text(encoding="utf-8"), source=str(path))


def split_records(records: list[Record], split: str, *, test: list[Record] | None = None
                  ) -> list[Record]:
    """Select a split from the trainval records (``test`` needs the test records)."""
    if split == "trainval":
        return list(records)
    if split == "val":
        return [r for i, r in enumerate(records) if i % VAL_EVERY == 0]
    if split == "train":
        return [r for i, r in enumerate(records) if i % VAL_EVERY != 0]
    if split == "test":
        if test is None:
            raise ValueError("split 'test' needs the records of test.txt")
        return list(test)
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def subset(items: list, n: int | None, how: str = "spread") -> list:
    """At most ``n`` of ``items`` (all of them for None), in their order: ``spread`` takes them
    evenly over the list (item ``i * len(items) // n`` for i = 0 … n-1), ``first`` the first n.

    The real data set's lists are sorted by breed, 90-odd images of each: the first 300 training
    images are three and a half breeds, the first 100 test images Abyssinian cats, where a
    spread subset holds every breed in its share."""
    if how not in SUBSETS:
        raise ValueError(f"unknown subset {how!r}; choose one of {', '.join(SUBSETS)}")
    items = list(items)
    if n is None or n >= len(items):
        return items
    if how == "first":
        return items[:n]
    return [items[i * len(items) // n] for i in range(n)]


#: Folder name of the data set inside a data root (torchvision's convention).
DATASET_FOLDER = "oxford-iiit-pet"


def dataset_dir(root: str | os.PathLike) -> Path:
    """The folder holding ``images/`` and ``annotations/`` under a data root; ValueError when
    ``root`` is a file (an archive given as ``--root``, say)."""
    root = Path(root).expanduser()
    if root.is_file():
        raise ValueError(f"--root {root} is a file; give the folder that holds {DATASET_FOLDER}/ "
                         f"(the folder that holds images/ and annotations/)")
    return root / DATASET_FOLDER


def load_split(root: str | os.PathLike, split: str) -> list[Record]:
    """Records of a split of the data set under ``root`` (``root/oxford-iiit-pet/annotations``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    annotations = dataset_dir(root) / "annotations"
    if split == "test":
        return read_list(annotations / "test.txt")
    return split_records(read_list(annotations / "trainval.txt"), split)
