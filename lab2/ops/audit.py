"""The audit of a data root (:func:`lab2.data.audit.audit_folder`), spread over the CPU cores and
kept in the data root's cache folder (``<root>/cache/audit-<fingerprint>.json``, or under
``$LAB2_CACHE_DIR``), keyed by the data set's fingerprint (:mod:`lab2.ops.fingerprint`, the names
and contents of its files). Where that folder cannot be written (a read-only data root without
``LAB2_CACHE_DIR``) the audit still runs, with a warning that it is not saved. And the split
lists' leaks, refused (:func:`refuse_leaks`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

from tqdm.auto import tqdm

from ..data.audit import AuditReport, audit_folder, check_sample
from ..data.index import dataset_dir
from . import atomic
from .console import shell_word
from .download import check_extracted
from .fingerprint import dataset_fingerprint, file_hashes
from .paths import cache_dir
from .processes import usable_cpus, worker_pool

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
    """Classify every file of the data set under ``root`` (:func:`lab2.data.audit.audit_folder`),
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


__all__ = ["AUDIT_VERSION", "SplitLeak", "audit_dataset", "refuse_leaks"]
