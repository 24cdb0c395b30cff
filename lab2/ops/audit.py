"""The audit of a data set: every file classified as ok, recovered, skipped or ignored, and the
split lists checked; spread over the CPU cores and kept in the data root's cache folder
(``<root>/cache/audit-<fingerprint>.json``, or under ``$LAB2_CACHE_DIR``), keyed by the data set's
fingerprint (:mod:`lab2.ops.fingerprint`, the names and contents of its files). Where that folder
cannot be written (a read-only data root without ``LAB2_CACHE_DIR``) the audit still runs, with a
warning that it is not saved.

The real archive holds files that a plain ``cv2.imread`` cannot read (docs/report.md lists them):
MATLAB files in ``images/``, GIF or RGBA PNG data saved as ``.jpg``, grayscale and CMYK JPEGs, a
truncated JPEG. Pillow decodes every container and mode (:func:`lab2.data.reading.read_rgb`):

* *recovered* — decodable pixels in the wrong container or mode (GIF or PNG saved as ``.jpg``, RGBA,
  palette, grayscale, CMYK); read and converted to 3-channel RGB.
* *skipped* — no usable sample: not an image (the ``.mat`` files), undecodable or truncated data,
  trimap missing, trimap values outside {1, 2, 3}, trimap of another size than its image, or an
  image listed in a split that is not on disk. Skipped samples are excluded from every split.
* *ignored* — hidden ``._*`` files (macOS metadata in the annotations archive) and trimaps with no
  image; they are not read.

And the split lists: an id listed twice, an id of ``test.txt`` also in ``trainval.txt``, and
listed images with the same bytes under two ids (from the hashes the fingerprint computes
anyway). A test image also trained or validated on — by its id or by its bytes — would make
Table 1 measure the network on what it learned: :func:`refuse_leaks` stops ``train`` and
``experiment`` there. JPEGs that libjpeg decodes with a warning only ("extraneous bytes before
marker") decode to full images and count as ok.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.index import Record, dataset_dir, read_list
from ..data.reading import image_size_of, read_trimap
from . import atomic
from .console import shell_word
from .download import check_extracted
from .fingerprint import dataset_fingerprint, file_hashes
from .paths import cache_dir
from .processes import usable_cpus, worker_pool

OK, RECOVERED, SKIPPED, IGNORED = "ok", "recovered", "skipped", "ignored"

_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF",
               b"GIF89a": "GIF"}
_EXPECTED_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF"}
_MODE_NAMES = {"RGBA": "RGBA", "P": "palette", "L": "grayscale", "LA": "grayscale+alpha",
               "CMYK": "CMYK", "1": "1-bit", "I;16": "16-bit grayscale", "I": "32-bit integer"}


def sniff_format(head: bytes) -> str | None:
    """Image format from a file's first bytes (JPEG, PNG, GIF), or None."""
    for signature, name in _SIGNATURES.items():
        if head.startswith(signature):
            return name
    return None


def pillow_format(path: str | os.PathLike) -> str | None:
    """The format Pillow identifies from a file's header (WebP, BMP, TIFF, ...), or None."""
    try:
        with Image.open(path) as image:
            return image.format
    except Exception:  # UnidentifiedImageError, OSError, ...
        return None


def image_format(path: str | os.PathLike) -> str | None:
    """A file's image format by its first bytes or by Pillow's reading of its header (nothing is
    decoded), or None: not an image."""
    with open(path, "rb") as f:
        head = f.read(16)
    return sniff_format(head) or pillow_format(path)


def check_image(path: str | os.PathLike) -> tuple[str, str]:
    """Classify an image file: (OK | RECOVERED | SKIPPED, problem description or '').

    Any format Pillow reads counts as an image (JPEG, PNG and GIF are recognised by their
    signature, the rest — WebP, BMP, TIFF, ... — by Pillow itself)."""
    path = Path(path)
    fmt = image_format(path)
    if fmt is None:
        expected = path.suffix.lower() in _EXPECTED_FORMAT
        what = "unknown data" if expected else f"a {path.suffix} file"
        return SKIPPED, f"not an image ({what})"
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
    except Image.DecompressionBombError:
        return SKIPPED, too_large(path)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... on bad data
        return SKIPPED, f"truncated or corrupt {fmt} data ({e})"
    problems = []
    expected = _EXPECTED_FORMAT.get(path.suffix.lower())
    if expected and fmt != expected:
        problems.append(f"{fmt} data saved as {path.suffix}")
    if mode != "RGB":
        problems.append(f"{_MODE_NAMES.get(mode, mode)} image, converted to RGB")
    return (RECOVERED, "; ".join(problems)) if problems else (OK, "")


def too_large(path: str | os.PathLike) -> str:
    """Why an image over Pillow's pixel limit is not decoded: its size, read from its header
    (which Pillow reads without the limit: nothing is decoded), and the limit."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            width, height = image.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return (f"too large to decode: {width}x{height} = {width * height:,} pixels, over Pillow's "
            f"limit of {2 * limit:,} (a guard against decompression bombs)")


def check_trimap(path: str | os.PathLike, image_size: tuple[int, int] | None) -> tuple[str, str]:
    """Classify a trimap: SKIPPED if missing, unreadable, off-values or of another size than the
    image ((width, height) as Pillow gives it); OK otherwise."""
    path = Path(path)
    if not path.is_file():
        return SKIPPED, "trimap missing"
    try:
        trimap = read_trimap(path)
    except Exception as e:
        return SKIPPED, f"trimap unreadable ({e})"
    values = set(np.unique(trimap).tolist())
    if not values <= {1, 2, 3}:
        scaled = values <= {257, 514, 771}
        return SKIPPED, (f"trimap values {sorted(values - {1, 2, 3})} outside {{1, 2, 3}}"
                         + (" (1, 2, 3 scaled by 257: a 16-bit copy of the trimap?)"
                            if scaled else ""))
    if image_size is not None and (trimap.shape[1], trimap.shape[0]) != tuple(image_size):
        return SKIPPED, (f"trimap size {trimap.shape[1]}x{trimap.shape[0]} differs from the "
                         f"image's {image_size[0]}x{image_size[1]}")
    return OK, ""


def listed_twice(records: list[Record]) -> list[str]:
    """The names a list file gives more than once, in the order of their second line."""
    seen: set[str] = set()
    twice = [r.name for r in records if r.name in seen or seen.add(r.name)]
    return list(dict.fromkeys(twice))


def shared_names(trainval: list[Record], test: list[Record]) -> list[str]:
    """The names of ``test.txt`` that ``trainval.txt`` lists too (in test's order): images
    the network would be tested on after training or validating on them."""
    seen = {r.name for r in trainval}
    return list(dict.fromkeys(r.name for r in test if r.name in seen))


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
    #: the split lists' faults: ``twice`` (list file → names it lists more than once),
    #: ``shared`` (names of test.txt also in trainval.txt) and ``same_bytes`` (groups of
    #: listed images with identical content, each name with its list: ``test:Bengal_4``)
    lists: dict = field(default_factory=dict)

    def leaks(self) -> list[str]:
        """What puts a test image into training or validation, in words (empty: nothing)."""
        found = []
        shared = self.lists.get("shared") or []
        if shared:
            found.append(f"{_counted(shared, 'id')} of test.txt also in trainval.txt "
                         f"({_first_five(shared)})")
        copies = [group for group in self.lists.get("same_bytes") or []
                  if {g.partition(":")[0] for g in group} == {"test", "trainval"}]
        if copies:
            pairs = [" = ".join(group) for group in copies]
            found.append(f"{_counted(copies, 'test image')} with the same bytes as a training "
                         f"or validation image ({_first_five(pairs)})")
        return found

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
        for file, names in (self.lists.get("twice") or {}).items():
            lines.append(f"annotations/{file} lists {_counted(names, 'id')} twice: "
                         f"{', '.join(names)}")
        if self.lists.get("shared"):
            lines.append(f"annotations/test.txt and trainval.txt both list "
                         f"{_counted(self.lists['shared'], 'id')} (train and experiment refuse "
                         f"the data set): {', '.join(self.lists['shared'])}")
        for group in self.lists.get("same_bytes") or []:
            leak = {g.partition(":")[0] for g in group} == {"test", "trainval"}
            lines.append(f"same bytes under {len(group)} ids: {' = '.join(group)}"
                         + (" (a test image in training or validation: train and experiment "
                            "refuse the data set)" if leak else ""))
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
        d = asdict(self)
        d["entries"] = [dict(e, action=ACTIONS[e["status"]]) for e in d["entries"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AuditReport:
        entries = [AuditEntry(e["file"], e["status"], e["problem"]) for e in d["entries"]]
        return cls(d["folder"], d["fingerprint"], d["n_image_files"], d["n_listed"], entries,
                   d.get("lists") or {})


def _counted(items, what: str) -> str:
    return f"{len(items)} {what}{'' if len(items) == 1 else 's'}"


def _first_five(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _list_faults(annotations: Path, hashes: dict, skipped: frozenset[str]) -> dict:
    """The split lists' faults (:attr:`AuditReport.lists`); ``hashes``: name → (size, SHA-256)
    of every file (the fingerprint's, already computed)."""
    lists = {name: read_list(annotations / name) for name in ("trainval.txt", "test.txt")
             if (annotations / name).is_file()}
    faults: dict = {}
    twice = {name: found for name, records in lists.items() if (found := listed_twice(records))}
    if twice:
        faults["twice"] = twice
    shared = shared_names(lists.get("trainval.txt", []), lists.get("test.txt", []))
    if shared:
        faults["shared"] = shared
    groups: dict[str, list[str]] = {}
    for list_file, records in lists.items():
        for name in dict.fromkeys(r.name for r in records if r.name not in skipped):
            digest = hashes.get(f"images/{name}.jpg", (0, None))[1]
            if digest is not None and not digest.startswith("unreadable"):
                entry = f"{list_file.removesuffix('.txt')}:{name}"
                if entry not in groups.setdefault(digest, []):
                    groups[digest].append(entry)
    same = [group for group in groups.values()
            if len({g.partition(":")[2] for g in group}) > 1]
    if same:
        faults["same_bytes"] = same
    return faults


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _files(folder: Path) -> list[Path]:
    """The files of ``folder`` that can be read by name (see :func:`_unusable`)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _utf8_name(p.name))


def _utf8_name(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:     # os.listdir's escape of bytes that are not UTF-8
        return False


def escaped(name: str) -> str:
    """A file name that can be printed and written to JSON: bytes that are not UTF-8 shown as
    ``\\xe9``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _unusable(folder: Path, prefix: str) -> list[AuditEntry]:
    """Entries of ``folder`` no split can use whatever they hold: a name that is not valid
    UTF-8 (the list files name samples in UTF-8; such a name stopped every command), and a
    symbolic link that leads nowhere or in a loop (which stopped the audit with ``Errno 40``)."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not _utf8_name(path.name):
            found.append(AuditEntry(f"{prefix}/{escaped(path.name)}", SKIPPED,
                                    "file name is not valid UTF-8 (shown escaped); rename it"))
        elif path.is_symlink() and not path.exists():
            found.append(AuditEntry(f"{prefix}/{path.name}", SKIPPED,
                                    "symbolic link that leads nowhere or in a loop; not read"))
    return found


def _listed_names(annotations: Path) -> list[str]:
    names: dict[str, None] = {}
    for list_file in ("trainval.txt", "test.txt", "list.txt"):
        if (annotations / list_file).is_file():
            names.update((r.name, None) for r in read_list(annotations / list_file))
    return list(names)


def check_sample(job: tuple[str, str, str | None]) -> list[tuple[str, str, str]]:
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


def audit_folder(folder: str | os.PathLike, *, fingerprint: str = "",
                 hashes: dict[str, tuple[int, str]], run: Callable[[list], Iterable[list]]
                 ) -> AuditReport:
    """Classify every file of a data set folder (``<root>/oxford-iiit-pet``) and check its split
    lists; see the module docstring. ``hashes``: file name → (size, SHA-256), for the images
    with the same bytes; ``run(jobs)`` checks the images (:func:`check_sample` on each, spread
    over the CPU cores by :func:`audit_dataset`)."""
    folder = Path(folder)
    images, trimaps = folder / "images", folder / "annotations" / "trimaps"
    listed = _listed_names(folder / "annotations")
    listed_set = set(listed)
    entries = [*_unusable(images, "images"), *_unusable(trimaps, "annotations/trimaps"),
               *_unusable(folder / "annotations", "annotations")]
    told = {e.file for e in entries}
    image_files = _files(images)
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
        if name not in present and f"images/{name}.jpg" not in told:
            entries.append(AuditEntry(f"images/{name}.jpg", SKIPPED, "image listed but missing"))
    for path in _files(trimaps):
        rel = f"annotations/trimaps/{path.name}"
        if _is_hidden(path.name):
            entries.append(AuditEntry(rel, IGNORED, "hidden metadata file"))
        elif path.stem not in present:
            entries.append(AuditEntry(rel, IGNORED, "trimap without an image"))

    for found in run(jobs):
        entries.extend(AuditEntry(*f) for f in found)
    order = {SKIPPED: 0, RECOVERED: 1, IGNORED: 2}
    entries.sort(key=lambda e: (order[e.status], e.file))
    skipped = frozenset(e.name for e in entries if e.status == SKIPPED)
    return AuditReport(str(folder), fingerprint,
                       sum(not _is_hidden(p.name) for p in image_files), len(listed), entries,
                       _list_faults(folder / "annotations", hashes, skipped))


#: 2: the split lists' faults (ids listed twice or in both lists, images with the same bytes).
AUDIT_VERSION = 2
log = logging.getLogger(__name__)


class SplitLeak(ValueError):
    """The split lists put a test image into training or validation."""


def refuse_leaks(report: AuditReport, root) -> None:
    """Raise :class:`SplitLeak` when a test image is also trained or validated on, by its id or
    by its bytes (Table 1's Dice would be measured on images the network learned): it trained
    and tested without a word before."""
    leaks = report.leaks()
    if leaks:
        raise SplitLeak(
            f"the splits of {report.folder} put test images into training or validation: "
            f"{'; '.join(leaks)}; take each out of one of the lists (the official ones share "
            f"none: python -m lab2 download restores them), and see them all with: python -m "
            f"lab2 audit --root {shell_word(root)}")


def _run(jobs: list, workers: int, progress: bool) -> Iterable[list]:
    bar = dict(total=len(jobs), desc="audit", unit="img", disable=not progress, leave=False)
    if workers <= 1 or len(jobs) < 4 * workers:
        return tqdm(map(check_sample, jobs), **bar)
    with worker_pool(workers, "audit") as pool:
        return list(tqdm(pool.map(check_sample, jobs, chunksize=32), **bar))


def audit_dataset(root: str | os.PathLike, *, progress: bool = True, workers: int | None = None,
                  use_cache: bool = True) -> AuditReport:
    """Classify every file of the data set under ``root`` (:func:`audit_folder`),
    with ``workers`` processes (default: one per usable core); the result is kept."""
    folder = dataset_dir(root)
    if not (folder / "images").is_dir() or not (folder / "annotations").is_dir():
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
    report = audit_folder(folder, fingerprint=fingerprint,
                          hashes=file_hashes(root, progress=False),
                          run=lambda jobs: _run(jobs, workers or usable_cpus(), progress))
    if use_cache:
        try:
            atomic.write_json(cache, {"version": AUDIT_VERSION, **report.to_dict()},
                              fix="set LAB2_CACHE_DIR to a writable folder")
        except atomic.StorageError as e:
            log.warning("the audit is not saved and will run again next time: %s", e)
    return report


__all__ = ["ACTIONS", "AUDIT_VERSION", "REPORTED_PROBLEM_FILES", "AuditEntry", "AuditReport",
           "SplitLeak", "audit_dataset", "audit_folder", "check_image", "check_sample",
           "check_trimap", "escaped", "refuse_leaks"]
