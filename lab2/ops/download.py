"""Fetch, verify and safely extract the Oxford-IIIT Pet archives.

``download_oxford_pet(root)`` puts the data set in ``root/oxford-iiit-pet/`` (torchvision's layout):
hosts are tried in order (the official VGG address, then the second host, or only the mirror given
as an argument or in ``LAB2_PET_MIRROR``); bytes go to ``<archive>.part``, resumed with an HTTP
Range request and retried with back-off; the md5 is checked before anything is extracted (a
mismatch renames the file ``<archive>.md5-mismatch`` and raises :class:`ChecksumError`); an
archive with a member that would land outside the folder, a link or a device file is refused
whole. A ``.<archive>.extracting`` marker is written before an archive is extracted and replaced
by ``.<archive>.extracted`` after: :func:`check_extracted` refuses a folder a killed extraction
left (the list files can be there while trimaps are not), with the command that finishes it. One
download into a folder at a time; a second waits, then finds the work done (docs/data.md).
"""

from __future__ import annotations

import http.client
import os
import socket
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..data.index import dataset_dir
from . import atomic, locks
from .console import shell_word

#: Base URLs holding both archives, tried in this order.
OFFICIAL_HOSTS: tuple[str, ...] = (
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/",
    "https://thor.robots.ox.ac.uk/~vgg/data/pets/",
)

#: (file name, md5) of the two official archives, as torchvision's ``OxfordIIITPet`` lists them.
RESOURCES: tuple[tuple[str, str], ...] = (
    ("images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
    ("annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f"),
)

MIRROR_ENV = "LAB2_PET_MIRROR"
# What to do when the data set's folder has no room (or cannot be written).
_ROOM_FIX = ("download into a folder on another disk: --root DIR, or LAB2_DATA_DIR for every "
             "command (the archives take 0.8 GB, the files extracted from them 0.8 GB more)")
_CHUNK = 1 << 20
# Answers that mean "this host does not have the file": go to the next host at once.
_NOT_HERE = {401, 403, 404, 410}


class DownloadError(RuntimeError):
    """No host could deliver an archive (offline, or every host refused)."""


class ChecksumError(ValueError):
    """An archive's md5 differs from the published one."""


class UnsafeArchiveError(ValueError):
    """An archive holds a member that must not be extracted (path escape, link, device file)."""


class UnfinishedDownload(ValueError):
    """The data set folder holds an archive whose extraction was interrupted."""


def _marker(folder: Path, filename: str, state: str) -> Path:
    return folder / f".{filename}.{state}"


def unfinished_extractions(folder: str | os.PathLike) -> list[str]:
    """The archives whose extraction into ``folder`` began and did not end (a kill, Ctrl-C, a
    full disk): their ``.extracting`` marker is there without an ``.extracted`` one."""
    folder = Path(folder)
    started = sorted(folder.glob(".*.extracting")) if folder.is_dir() else []
    names = [p.name[1:-len(".extracting")] for p in started]
    return [n for n in names if not _marker(folder, n, "extracted").is_file()]


def check_extracted(folder: str | os.PathLike) -> None:
    """Raise :class:`UnfinishedDownload` when an extraction into the data set folder ``folder``
    was interrupted: a part of its files is missing or cut short, and training on the rest would
    give results of another data set under the real one's name."""
    unfinished = unfinished_extractions(folder)
    if unfinished:
        raise UnfinishedDownload(
            f"the data set in {folder} is incomplete: the extraction of {' and '.join(unfinished)} "
            f"was interrupted, so some of its files are missing or cut short; finish it with "
            f"`python -m lab2 download --root {shell_word(str(Path(folder).parent))}` "
            f"(it checks the archive and extracts it again)")


def download_oxford_pet(
    root: str | os.PathLike,
    mirror: str | None = None,
    resources: Sequence[tuple[str, str]] | None = None,
    *,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download, verify and extract the data set into ``root/oxford-iiit-pet``; return that folder.

    ``resources`` defaults to :data:`RESOURCES`; tests pass their own (name, md5) pairs.
    """
    folder = dataset_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    bases = [mirror] if mirror else list(OFFICIAL_HOSTS)
    resources = RESOURCES if resources is None else tuple(resources)

    # a second download into the folder (another terminal, `report` beside `download`) waits for
    # the first and finds its work done: both appended to one .part file before
    with locks.owned(folder / ".lab2-download.lock", f"the download into {folder}", wait=True):
        for filename, md5 in resources:
            _fetch_and_extract(folder, filename, md5, bases, resources, retries=retries,
                               backoff_s=backoff_s, timeout_s=timeout_s, progress=progress)
    return folder


def _fetch_and_extract(folder: Path, filename: str, md5: str, bases: Sequence[str],
                       resources: Sequence[tuple[str, str]], *, retries: int, backoff_s: float,
                       timeout_s: float, progress: bool) -> None:
    """One archive: fetched unless present, verified, extracted between the two markers."""
    done = _marker(folder, filename, "extracted")
    started = _marker(folder, filename, "extracting")
    if done.is_file() and done.read_text(encoding="utf-8").strip() == md5:
        started.unlink(missing_ok=True)  # killed between the two markers
        return  # verified and extracted by an earlier call
    archive = folder / filename
    if not archive.is_file():
        _fetch_from_hosts(filename, archive, bases, resources, folder,
                          retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                          progress=progress)
    _verify(archive, md5)
    done.unlink(missing_ok=True)  # of an archive of this name with another md5: not this one
    atomic.write_text(started, md5 + "\n")
    safe_extract(archive, folder, progress=progress)
    atomic.write_text(done, md5 + "\n")
    started.unlink()


def _verify(archive: Path, expected: str) -> None:
    actual = atomic.file_digest(archive, "md5")
    if actual != expected:
        with open(archive, "rb") as f:
            head = f.read(512).lstrip().lower()
        page = (" It is a web page, not an archive: a network that asks you to log in first "
                "(a hotel's or a campus's Wi-Fi), or a proxy, answered instead of the host; log "
                "in with a browser, then run the download again."
                if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")) else "")
        bad = archive.with_name(archive.name + ".md5-mismatch")
        os.replace(archive, bad)
        raise ChecksumError(
            f"{archive.name}: md5 {actual} does not match the expected {expected}; the file was "
            f"moved to {bad.name}.{page} Delete it and run the download again, or copy a good "
            f"{archive.name} into {archive.parent}."
        )


def _fetch_from_hosts(filename: str, archive: Path, bases: Iterable[str],
                      resources: Sequence[tuple[str, str]], folder: Path, *, retries: int,
                      backoff_s: float, timeout_s: float, progress: bool) -> None:
    part = archive.with_name(archive.name + ".part")
    failures: list[str] = []
    for base in bases:
        url = base.rstrip("/") + "/" + filename
        for attempt in range(retries):
            try:
                _fetch(url, part, timeout_s=timeout_s, progress=progress, desc=filename)
                os.replace(part, archive)
                return
            except urllib.error.HTTPError as e:
                failures.append(f"{url}: HTTP {e.code}")
                if e.code in _NOT_HERE:
                    break
            except urllib.error.URLError as e:
                failures.append(f"{url}: {e.reason}")
                if isinstance(e.reason, socket.gaierror):
                    break  # the host name does not resolve: offline, or no such host
            except atomic.StorageError:
                raise  # a full disk or a read-only folder: no host can help
            except (OSError, http.client.HTTPException) as e:  # reset, timeout, cut transfer
                failures.append(f"{url}: {type(e).__name__}: {e}")
            if attempt + 1 < retries:
                time.sleep(backoff_s * 2**attempt)
    names = " and ".join(name for name, _ in resources)
    raise DownloadError(
        f"Could not fetch {filename} ({'; '.join(failures[-3:]) or 'no host given'}). "
        f"If this machine is offline, copy {names} into {folder} and run the command again, "
        f"or point --mirror / {MIRROR_ENV} at a server that holds them, "
        f"or use the synthetic sample instead: python -m lab2 sample."
    )


def _fetch(url: str, part: Path, *, timeout_s: float, progress: bool, desc: str) -> None:
    """Append the rest of ``url`` to ``part`` (resuming with a Range request when it exists)."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "lab2-downloader"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing left to send: the partial file is whole
            return
        raise
    with response:
        if start and response.status != 206:
            start = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        if length is not None:
            atomic.check_free_space(part.parent, int(length), f"downloading {desc}", _ROOM_FIX)
        try:
            with open(part, "ab" if start else "wb") as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, disable=not progress, leave=False,
            ) as bar:
                while block := response.read(_CHUNK):
                    try:
                        f.write(block)
                    except OSError as e:
                        raise atomic.storage_error(part, e, _ROOM_FIX) from e
                    bar.update(len(block))
        except PermissionError as e:   # opening the file: a read-only folder
            raise atomic.storage_error(part, e, _ROOM_FIX) from e
    if total is not None and part.stat().st_size < total:
        raise ConnectionError(f"transfer stopped at {part.stat().st_size} of {total} bytes")


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "device or special file"
        raise UnsafeArchiveError(f"refusing to extract {member.name!r}: it is a {kind}")
    target = (dest / member.name).resolve()
    if os.path.isabs(member.name) or not target.is_relative_to(dest):
        raise UnsafeArchiveError(
            f"refusing to extract {member.name!r}: it would land outside {dest}")


def _growth(member: tarfile.TarInfo, dest: Path) -> int:
    """Bytes the disk loses when ``member`` is extracted over what ``dest`` holds already (an
    interrupted extraction is done again over its own files)."""
    try:
        return max(0, member.size - (dest / member.name).stat().st_size)
    except OSError:
        return member.size


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *,
                 progress: bool = True) -> None:
    """Extract a tar archive (any compression) after checking every member; all or nothing.

    Raises :class:`UnsafeArchiveError` before writing anything if a member is a link, a device
    file, or has a path that escapes ``dest``.
    """
    dest = Path(dest).resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, dest)
        atomic.check_free_space(dest, sum(_growth(m, dest) for m in members),
                                f"extracting {Path(archive).name}", _ROOM_FIX)
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        for member in tqdm(members, desc=f"extract {Path(archive).name}", unit="file",
                           disable=not progress, leave=False):
            try:
                tar.extract(member, dest, **extra)
            except OSError as e:
                raise atomic.storage_error(dest / member.name, e, _ROOM_FIX) from e
