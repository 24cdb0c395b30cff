"""Acquisition, proven offline against a loopback HTTP server serving archives of a sample."""

from __future__ import annotations

import errno
import hashlib
import io
import shutil
import tarfile
import threading
import time

import pytest
from cli_output import one_line_error
from loopback import LoopbackServer

from lab2.data.index import dataset_dir, load_split
from lab2.ops import choose as choose_module
from lab2.ops import cli
from lab2.ops import download as download_module
from lab2.ops.audit import audit_dataset
from lab2.ops.choose import choose_data_root, missing_dataset
from lab2.ops.download import (
    ChecksumError,
    DownloadError,
    UnfinishedDownload,
    UnsafeArchiveError,
    download_oxford_pet,
    safe_extract,
)
from lab2.ops.fingerprint import dataset_fingerprint
from lab2.ops.loaders import open_dataset
from lab2.ops.sample import make_sample_dataset


def _tarball(folder, subdir: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder / subdir, arcname=subdir)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """(name, bytes, md5) of images.tar.gz and annotations.tar.gz made from a tiny sample."""
    root = tmp_path_factory.mktemp("source")
    make_sample_dataset(root, n_trainval=10, n_test=5, size=64, progress=False)
    folder = dataset_dir(root)
    out = []
    for name, sub in (("images.tar.gz", "images"), ("annotations.tar.gz", "annotations")):
        data = _tarball(folder, sub)
        out.append((name, data, hashlib.md5(data).hexdigest()))
    return out


@pytest.fixture
def server(archives):
    with LoopbackServer() as srv:
        for name, data, _ in archives:
            srv.state.files[f"/pets/{name}"] = data
        yield srv


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch):
    monkeypatch.setattr(download_module.time, "sleep", lambda s: None)


def _resources(archives):
    return [(name, md5) for name, _, md5 in archives]


def test_fresh_download_verifies_and_extracts(tmp_path, server, archives):
    folder = download_oxford_pet(tmp_path, mirror=server.url + "/pets",
                                 resources=_resources(archives), progress=False)
    assert (folder / "annotations" / "trainval.txt").is_file()
    assert len(list((folder / "images").glob("*.jpg"))) >= 15
    for name, _, md5 in archives:
        assert (folder / name).is_file()
        assert (folder / f".{name}.extracted").read_text(encoding="utf-8").strip() == md5


def test_second_call_fetches_nothing(tmp_path, server, archives):
    kwargs = dict(mirror=server.url + "/pets", resources=_resources(archives), progress=False)
    download_oxford_pet(tmp_path, **kwargs)
    n = len(server.state.requests)
    download_oxford_pet(tmp_path, **kwargs)
    assert len(server.state.requests) == n


def test_transfer_cut_half_way_resumes_with_range(tmp_path, server, archives):
    server.state.cut_once.add("/pets/images.tar.gz")
    with pytest.raises(DownloadError):
        download_oxford_pet(tmp_path, mirror=server.url + "/pets", resources=_resources(archives),
                            retries=1, progress=False)
    part = dataset_dir(tmp_path) / "images.tar.gz.part"
    assert 0 < part.stat().st_size < len(archives[0][1])
    folder = download_oxford_pet(tmp_path, mirror=server.url + "/pets",
                                 resources=_resources(archives), progress=False)
    ranged = [r for path, r in server.state.requests if path == "/pets/images.tar.gz" and r]
    assert ranged == [f"bytes={len(archives[0][1]) // 2}-"]
    assert (folder / "annotations" / "test.txt").is_file()
    assert not part.exists()


def test_cut_transfer_is_retried_within_one_call(tmp_path, server, archives):
    server.state.cut_once.add("/pets/annotations.tar.gz")
    folder = download_oxford_pet(tmp_path, mirror=server.url + "/pets",
                                 resources=_resources(archives), retries=3, progress=False)
    assert (folder / "annotations" / "trainval.txt").is_file()


def test_wrong_md5_raises_clear_error_and_leaves_nothing_passing_as_complete(
        tmp_path, server, archives):
    (img_name, _, img_md5), (ann_name, _, ann_md5) = archives
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as excinfo:
        download_oxford_pet(tmp_path, mirror=server.url + "/pets",
                            resources=[(img_name, img_md5), (ann_name, wrong)], progress=False)
    message = str(excinfo.value)
    assert ann_name in message and wrong in message and ann_md5 in message
    folder = dataset_dir(tmp_path)
    assert not (folder / ann_name).exists()
    assert not (folder / f".{ann_name}.extracted").exists()
    # the verified archive is kept
    assert (folder / img_name).is_file() and (folder / f".{img_name}.extracted").is_file()


def test_extraction_killed_half_way_is_refused_until_the_download_finishes(
        tmp_path, server, archives, monkeypatch, capsys):
    """Killed while the annotations archive was extracted, after its list files and before its
    trimaps: the folder looked whole (``trainval.txt`` was there) and training went on with the
    trimaps it found, under the real data set's name. Now every reader refuses it with the
    command that finishes the extraction, which it does."""
    kwargs = dict(mirror=server.url + "/pets", resources=_resources(archives), progress=False)
    extract = tarfile.TarFile.extract

    def killed_at_the_trimaps(self, member, *args, **kw):
        if member.name.startswith("annotations/trimaps/") and member.isfile():
            raise KeyboardInterrupt
        return extract(self, member, *args, **kw)

    monkeypatch.setattr(tarfile.TarFile, "extract", killed_at_the_trimaps)
    with pytest.raises(KeyboardInterrupt):
        download_oxford_pet(tmp_path, **kwargs)
    monkeypatch.setattr(tarfile.TarFile, "extract", extract)
    folder = dataset_dir(tmp_path)
    assert (folder / "annotations" / "trainval.txt").is_file()
    assert not any((folder / "annotations" / "trimaps").glob("[!.]*.png"))

    assert missing_dataset(tmp_path) is not None
    for read in (lambda: open_dataset(tmp_path, "train"), lambda: audit_dataset(tmp_path)):
        with pytest.raises(UnfinishedDownload, match="extraction of annotations.tar.gz was "
                           "interrupted.*python -m lab2 download --root"):
            read()
    assert cli.main(["audit", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "incomplete" in err and "lab2 download --root" in err
    monkeypatch.setattr(choose_module, "make_sample_dataset", lambda root: None)
    with pytest.warns(UserWarning, match="incomplete.*SYNTHETIC sample"):
        assert choose_data_root(tmp_path, tmp_path / "sample") == tmp_path / "sample"

    download_oxford_pet(tmp_path, **kwargs)  # finishes: the archive is checked, extracted again
    assert missing_dataset(tmp_path) is None and not list(folder.glob(".*.extracting"))
    assert len(load_split(tmp_path, "trainval")) == 10
    whole = download_oxford_pet(tmp_path / "whole", **kwargs)
    assert dataset_fingerprint(tmp_path) == dataset_fingerprint(whole.parent)


def test_a_kill_between_the_two_markers_leaves_a_finished_extraction(tmp_path, server, archives):
    kwargs = dict(mirror=server.url + "/pets", resources=_resources(archives), progress=False)
    folder = download_oxford_pet(tmp_path, **kwargs)
    started = folder / ".annotations.tar.gz.extracting"
    started.write_text(archives[1][2] + "\n", encoding="utf-8")  # ".extracted" written, then killed
    assert missing_dataset(tmp_path) is None
    n = len(server.state.requests)
    download_oxford_pet(tmp_path, **kwargs)
    assert not started.exists() and len(server.state.requests) == n


def test_a_second_download_into_the_folder_waits_and_fetches_nothing(
        tmp_path, server, archives, monkeypatch):
    """Two downloads at once (``download`` in one terminal, ``report`` in another) appended to
    the same ``.part`` file; the second now waits for the first and finds its work done."""
    kwargs = dict(mirror=server.url + "/pets", resources=_resources(archives), progress=False)
    fetch, fetched_by = download_module._fetch, []

    def slow(*args, **kw):
        fetched_by.append(threading.get_ident())
        time.sleep(0.3)
        return fetch(*args, **kw)

    monkeypatch.setattr(download_module, "_fetch", slow)
    first = threading.Thread(target=download_oxford_pet, args=(tmp_path,), kwargs=kwargs)
    first.start()
    while not fetched_by and first.is_alive():
        time.sleep(0.005)
    assert fetched_by, "the first download ended before fetching anything"
    download_oxford_pet(tmp_path, **kwargs)
    first.join()
    assert set(fetched_by) == {first.ident} and len(fetched_by) == 2
    assert missing_dataset(tmp_path) is None


def _error_line(capsys) -> str:
    """The one line a failed command printed, with nothing else but a progress bar before it."""
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and err.endswith("\n") and err.count("\n") == 1, err
    return one_line_error(capsys, err)


def _free(monkeypatch, free_bytes: int) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: usage._replace(free=free_bytes))


def test_a_disk_without_room_for_an_archive_says_so_before_fetching_it(
        tmp_path, server, archives, monkeypatch, capsys):
    """A full disk was taken for a failed transfer: retried four times with back-off, then
    "If this machine is offline, copy ...". Now one line with the room needed and --root."""
    monkeypatch.setenv(download_module.MIRROR_ENV, server.url + "/pets")
    monkeypatch.setattr(download_module, "RESOURCES", tuple(_resources(archives)))
    _free(monkeypatch, 1000)
    assert cli.main(["download", "--root", str(tmp_path)]) == 1
    err = _error_line(capsys)
    assert "downloading images.tar.gz needs" in err and "--root" in err
    assert "offline" not in err and len(server.state.requests) == 1


def test_a_disk_filling_up_during_a_transfer_or_an_extraction_is_said_in_one_line(
        tmp_path, server, archives, monkeypatch, capsys):
    monkeypatch.setenv(download_module.MIRROR_ENV, server.url + "/pets")
    monkeypatch.setattr(download_module, "RESOURCES", tuple(_resources(archives)))
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download_module, "open",
                        lambda path, mode="r", *a, **k: Full(real_open(path, mode, *a, **k)),
                        raising=False)
    assert cli.main(["download", "--root", str(tmp_path)]) == 1
    err = _error_line(capsys)
    assert "images.tar.gz.part: the disk is full" in err and "--root" in err
    assert len(server.state.requests) == 1                  # not retried as a lost connection
    monkeypatch.undo()

    monkeypatch.setenv(download_module.MIRROR_ENV, server.url + "/pets")
    monkeypatch.setattr(download_module, "RESOURCES", tuple(_resources(archives)))
    folder = dataset_dir(tmp_path)
    for name, data, _ in archives:                           # fetched; no room to extract them
        (folder / name).write_bytes(data)
    _free(monkeypatch, 1000)
    assert cli.main(["download", "--root", str(tmp_path)]) == 1
    err = _error_line(capsys)
    assert "extracting images.tar.gz needs" in err, err
    assert missing_dataset(tmp_path) is not None


def test_a_login_page_instead_of_the_archive_is_named_as_such(tmp_path, server, archives):
    """A campus or hotel network answers every address with its login page (status 200)."""
    page = b"<!DOCTYPE html><html><head><title>Log in to the Wi-Fi</title></head></html>"
    server.state.files["/pets/images.tar.gz"] = page
    with pytest.raises(ChecksumError, match="a web page, not an archive.*log in"):
        download_oxford_pet(tmp_path, mirror=server.url + "/pets",
                            resources=_resources(archives), progress=False)


def test_first_host_answering_404_falls_through_to_the_next(tmp_path, server, archives,
                                                            monkeypatch):
    monkeypatch.setattr(download_module, "OFFICIAL_HOSTS",
                        (server.url + "/missing/", server.url + "/pets/"))
    monkeypatch.delenv(download_module.MIRROR_ENV, raising=False)
    folder = download_oxford_pet(tmp_path, resources=_resources(archives), progress=False)
    assert (folder / "annotations" / "trainval.txt").is_file()
    paths = [p for p, _ in server.state.requests]
    assert paths.count("/missing/images.tar.gz") == 1  # a 404 is not retried
    assert "/pets/images.tar.gz" in paths


def test_offline_gives_one_clear_message_and_nonzero_exit(tmp_path, monkeypatch, capsys):
    with LoopbackServer() as srv:  # start, note its address, stop: nothing listens there now
        url = srv.url
    monkeypatch.setenv(download_module.MIRROR_ENV, url)
    code = cli.main(["download", "--root", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "copy images.tar.gz and annotations.tar.gz into" in err
    assert "python -m lab2 sample" in err and "--mirror" in err


def _tar_with(member: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # uncompressed: detection is automatic
        ok = tarfile.TarInfo("images/fine.txt")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_archive_members_are_refused_before_extracting_anything(tmp_path, kind):
    member = tarfile.TarInfo({"dotdot": "../evil.txt", "absolute": "/tmp/evil.txt"}.get(kind,
                                                                                       "images/l"))
    if kind in ("dotdot", "absolute"):
        member.size = 1
    elif kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        member.type, member.linkname = tarfile.LNKTYPE, "images/fine.txt"
    else:
        member.type = tarfile.CHRTYPE
    archive = tmp_path / "bad.tar"
    archive.write_bytes(_tar_with(member))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, dest, progress=False)
    assert not any(dest.rglob("*"))
    assert not (tmp_path / "evil.txt").exists()


def test_unsafe_archive_from_a_host_is_refused(tmp_path, server):
    member = tarfile.TarInfo("../outside.txt")
    member.size = 1
    data = _tar_with(member)
    server.state.files["/pets/evil.tar"] = data
    with pytest.raises(UnsafeArchiveError):
        download_oxford_pet(tmp_path / "root", mirror=server.url + "/pets",
                            resources=[("evil.tar", hashlib.md5(data).hexdigest())],
                            progress=False)
    assert not (tmp_path / "root" / "outside.txt").exists()
