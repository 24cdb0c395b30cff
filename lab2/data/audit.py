"""Audit of the data set: every file classified as ok, recovered, skipped or ignored.

* *recovered* — decodable pixels in the wrong container or mode (GIF or PNG saved as ``.jpg``, RGBA,
  palette, grayscale, CMYK); read and converted to 3-channel RGB.
* *skipped* — no usable sample: not an image (the ``.mat`` files), undecodable or truncated data,
  trimap missing, trimap values outside {1, 2, 3}, trimap of another size than its image, or an
  image listed in a split that is not on disk. Skipped samples are excluded from every split.
* *ignored* — hidden ``._*`` files (macOS metadata in the annotations archive) and trimaps with no
  image; they are not read.

JPEGs that libjpeg decodes with a warning only ("extraneous bytes before marker") decode to full
images and count as ok.

The result is cached in the data root's cache folder (``<root>/cache/audit-<fingerprint>.json``,
or under ``$LAB2_CACHE_DIR``), keyed by the data set's fingerprint (:mod:`lab2.data.fingerprint`,
the names and contents of its files), so data sets built on the data do not decode every image
again. Where that folder cannot be written (a read-only data root without ``LAB2_CACHE_DIR``) the
audit still runs, with a warning that it is not saved.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .. import atomic
from ..notices import shell_word
from ..paths import cache_dir, dataset_dir
from ..processes import usable_cpus, worker_pool
from .download import check_extracted
from .fingerprint import dataset_fingerprint
from .index import read_list
from .reading import IGNORED, RECOVERED, SKIPPED, check_image, check_trimap, image_size_of

AUDIT_VERSION = 1
log = logging.getLogger(__name__)
ACTIONS = {
    RECOVERED: "read and converted to RGB",
    SKIPPED: "excluded from every split",
    IGNORED: "not read",
}


#: The files the report could not read (docs/report.md, "Data"), and what it said of them.
REPORTED_PROBLEM_FILES = {
    "images/Abyssinian_100.mat": "non-image file in images/",
    "images/Abyssinian_101.mat": "non-image file in images/",
    "images/Abyssinian_102.mat": "non-image file in images/",
    "images/Abyssinian_34.jpg": "GIF data saved as .jpg",
    "images/Egyptian_Mau_139.jpg": "GIF data saved as .jpg",
    "images/Egyptian_Mau_145.jpg": "GIF data saved as .jpg",
    "images/Egyptian_Mau_167.jpg": "GIF data saved as .jpg",
    "images/Egyptian_Mau_177.jpg": "GIF data saved as .jpg",
    "images/Egyptian_Mau_191.jpg": "GIF data saved as .jpg",
}


@dataclass(frozen=True)
class AuditEntry:
    file: str      # path relative to the data set folder, e.g. "images/Abyssinian_34.jpg"
    status: str    # recovered | skipped | ignored
    problem: str

    @property
    def action(self) -> str:
        return ACTIONS[self.status]

    @property
    def name(self) -> str:
        """The sample name (file stem) the entry concerns."""
        return Path(self.file).stem


@dataclass
class AuditReport:
    folder: str
    fingerprint: str
    n_image_files: int
    n_listed: int
    entries: list[AuditEntry] = field(default_factory=list)

    def by_status(self, status: str) -> list[AuditEntry]:
        return [e for e in self.entries if e.status == status]

    @property
    def skipped_names(self) -> frozenset[str]:
        """Names of samples that no split may use."""
        return frozenset(e.name for e in self.by_status(SKIPPED))

    def table(self) -> str:
        """Plain-text table: file, problem, action."""
        rows = [(e.file, e.status, e.problem, e.action) for e in self.entries]
        header = ("file", "status", "problem", "action")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in rows]
        counts = {s: len(self.by_status(s)) for s in (RECOVERED, SKIPPED, IGNORED)}
        lines.append(
            f"{self.n_image_files} files in images/, {self.n_listed} listed samples: "
            f"{counts[RECOVERED]} recovered, {counts[SKIPPED]} skipped, {counts[IGNORED]} ignored")
        return "\n".join(lines)

    def against_report(self) -> str:
        """The report's unreadable files, each with what lab2's audit found and does."""
        found = {e.file: e for e in self.entries}
        lines = []
        for file, said in REPORTED_PROBLEM_FILES.items():
            entry = found.get(file)
            if entry is not None:
                what = f"{entry.status}: {entry.problem} -> {entry.action}"
            elif (Path(self.folder) / file).is_file():
                what = "ok: reads as a normal image"
            else:
                what = "not in this data set"
            lines.append(f"{file:30s} report: {said:28s} lab2: {what}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "folder": self.folder,
            "fingerprint": self.fingerprint,
            "n_image_files": self.n_image_files,
            "n_listed": self.n_listed,
            "entries": [dict(asdict(e), action=e.action) for e in self.entries],
        }

    @classmethod
    def from_dict(cls, d: dict) -> AuditReport:
        entries = [AuditEntry(e["file"], e["status"], e["problem"]) for e in d["entries"]]
        return cls(d["folder"], d["fingerprint"], d["n_image_files"], d["n_listed"], entries)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file())


def _listed_names(annotations: Path) -> list[str]:
    names: dict[str, None] = {}
    for list_file in ("trainval.txt", "test.txt", "list.txt"):
        if (annotations / list_file).is_file():
            names.update((r.name, None) for r in read_list(annotations / list_file))
    return list(names)


def _check_sample(job: tuple[str, str, str | None]) -> list[tuple[str, str, str]]:
    """Check one image file (and its trimap when the sample is listed) →
    [(file, status, problem)]."""
    folder, image_rel, trimap_rel = job
    status, problem = check_image(Path(folder) / image_rel)
    found = [(image_rel, status, problem)] if problem else []
    if trimap_rel is not None and status != SKIPPED:
        size = image_size_of(Path(folder) / image_rel)
        t_status, t_problem = check_trimap(Path(folder) / trimap_rel, size)
        if t_problem:
            found.append((trimap_rel, t_status, t_problem))
    return found


def _run(jobs: list, workers: int, progress: bool) -> Iterable[list]:
    bar = dict(total=len(jobs), desc="audit", unit="img", disable=not progress, leave=False)
    if workers <= 1 or len(jobs) < 4 * workers:
        return tqdm(map(_check_sample, jobs), **bar)
    with worker_pool(workers, "audit") as pool:
        return list(tqdm(pool.map(_check_sample, jobs, chunksize=32), **bar))


def audit_dataset(root: str | os.PathLike, *, progress: bool = True, workers: int | None = None,
                  use_cache: bool = True) -> AuditReport:
    """Classify every file of the data set under ``root``; see the module docstring."""
    folder = dataset_dir(root)
    images, trimaps = folder / "images", folder / "annotations" / "trimaps"
    if not images.is_dir() or not (folder / "annotations").is_dir():
        raise FileNotFoundError(
            f"no data set in {folder} (expected images/ and annotations/). Run "
            f"`python -m lab2 download --root {shell_word(root)}` or `python -m lab2 sample "
            f"--root {shell_word(root)}`.")
    check_extracted(folder)
    fingerprint = dataset_fingerprint(root)
    cache = cache_dir(root) / f"audit-{fingerprint}.json"
    if use_cache and cache.is_file():
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
            if stored.get("version") == AUDIT_VERSION and stored["fingerprint"] == fingerprint:
                return AuditReport.from_dict(stored)
        except (ValueError, KeyError):
            pass  # unreadable cache: audit again

    listed = _listed_names(folder / "annotations")
    listed_set = set(listed)
    entries: list[AuditEntry] = []
    image_files = [p for p in _files(images)]
    present = {p.stem for p in image_files if p.suffix.lower() == ".jpg"}
    jobs = []
    for path in image_files:
        rel = f"images/{path.name}"
        if _is_hidden(path.name):
            entries.append(AuditEntry(rel, IGNORED, "hidden metadata file"))
            continue
        sample = path.suffix.lower() == ".jpg" and path.stem in listed_set
        jobs.append((str(folder), rel, f"annotations/trimaps/{path.stem}.png" if sample else None))
    for name in listed:
        if name not in present:
            entries.append(AuditEntry(f"images/{name}.jpg", SKIPPED, "image listed but missing"))
    for path in _files(trimaps):
        rel = f"annotations/trimaps/{path.name}"
        if _is_hidden(path.name):
            entries.append(AuditEntry(rel, IGNORED, "hidden metadata file"))
        elif path.stem not in present:
            entries.append(AuditEntry(rel, IGNORED, "trimap without an image"))

    for found in _run(jobs, workers or usable_cpus(), progress):
        entries.extend(AuditEntry(*f) for f in found)
    order = {SKIPPED: 0, RECOVERED: 1, IGNORED: 2}
    entries.sort(key=lambda e: (order[e.status], e.file))
    report = AuditReport(str(folder), fingerprint,
                         sum(not _is_hidden(p.name) for p in image_files), len(listed), entries)
    if use_cache:
        try:
            atomic.write_json(cache, {"version": AUDIT_VERSION, **report.to_dict()},
                              fix="set LAB2_CACHE_DIR to a writable folder")
        except atomic.StorageError as e:
            log.warning("the audit is not saved and will run again next time: %s", e)
    return report
