"""Index, splits, masks, audit, sample generator and Dataset, on generated and hand-made data."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings

import numpy as np
import pytest
import torch
from sample_settings import TEST_SAMPLE

from lab2.data.index import BREEDS, breed_id_of, dataset_dir, load_split, parse_list, species_of
from lab2.data.masks import IGNORE_INDEX, trimap_to_mask
from lab2.data.reading import read_rgb, read_trimap
from lab2.ops import cli, fingerprint
from lab2.ops.audit import audit_dataset
from lab2.ops.loaders import open_dataset
from lab2.ops.sample import make_sample_dataset

pytestmark = pytest.mark.core

# ---- index and splits -------------------------------------------------------------------------

def test_breeds_are_the_37_real_ones_with_12_cats():
    assert len(BREEDS) == 37 == len(set(BREEDS))
    cats = [b for b in BREEDS if species_of(b) == 1]
    assert len(cats) == 12 and all(b[0].isupper() for b in cats)
    assert breed_id_of("Sphynx") == 12 and breed_id_of("yorkshire_terrier") == 25


def test_list_parser_skips_header_lines():
    text = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\nAbyssinian_100 1 1 1\n\n" \
           "yorkshire_terrier_9 37 2 25\n"
    records = parse_list(text)
    assert [r.name for r in records] == ["Abyssinian_100", "yorkshire_terrier_9"]
    assert records[1].class_id == 37 and records[1].species == 2 and records[1].breed_id == 25
    assert records[1].breed == "yorkshire_terrier"


def test_malformed_list_line_names_file_and_line():
    with pytest.raises(ValueError, match=r"trainval.txt, line 2"):
        parse_list("Abyssinian_1 1 1 1\nAbyssinian_2 one 1 1\n", source="trainval.txt")


def test_every_tenth_trainval_line_is_validation_on_a_hand_made_tree(tmp_path):
    annotations = dataset_dir(tmp_path) / "annotations"
    annotations.mkdir(parents=True)
    lines = [f"beagle_{i} 5 2 4" for i in range(25)]
    (annotations / "trainval.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (annotations / "test.txt").write_text("pug_1 26 2 16\npug_2 26 2 16\n", encoding="utf-8")
    val = [r.name for r in load_split(tmp_path, "val")]
    train = [r.name for r in load_split(tmp_path, "train")]
    assert val == ["beagle_0", "beagle_10", "beagle_20"]
    assert len(train) == 22 and not set(train) & set(val)
    assert len(load_split(tmp_path, "trainval")) == 25
    assert len(load_split(tmp_path, "test")) == 2
    with pytest.raises(ValueError, match="choose one of"):
        load_split(tmp_path, "validation")


def test_split_sizes_on_the_generated_sample(sample_root):
    n = TEST_SAMPLE["n_trainval"]
    assert len(load_split(sample_root, "trainval")) == n
    assert len(load_split(sample_root, "val")) == (n + 9) // 10
    assert len(load_split(sample_root, "train")) == n - (n + 9) // 10
    assert len(load_split(sample_root, "test")) == TEST_SAMPLE["n_test"]


def test_missing_list_file_says_how_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m lab2 download"):
        load_split(tmp_path, "train")


# ---- masks --------------------------------------------------------------------------------------

TRIMAP = np.array([[1, 2, 3], [3, 2, 1]], np.uint8)


def test_border_pixels_count_as_foreground_by_default():
    assert trimap_to_mask(TRIMAP).tolist() == [[1, 0, 1], [1, 0, 1]]


def test_border_can_be_background_or_ignored():
    assert trimap_to_mask(TRIMAP, "background").tolist() == [[1, 0, 0], [0, 0, 1]]
    assert trimap_to_mask(TRIMAP, "ignore").tolist() == [[1, 0, IGNORE_INDEX],
                                                         [IGNORE_INDEX, 0, 1]]
    with pytest.raises(ValueError, match="foreground"):
        trimap_to_mask(TRIMAP, "border")


# ---- sample -------------------------------------------------------------------------------------

def test_sample_has_official_layout_and_real_breed_names(sample_root):
    folder = dataset_dir(sample_root)
    list_txt = (folder / "annotations" / "list.txt").read_text(encoding="utf-8").splitlines()
    assert list_txt[0].startswith("#")
    records = load_split(sample_root, "trainval") + load_split(sample_root, "test")
    for r in records:
        assert r.breed == r.name.rsplit("_", 1)[0]
        assert r.species == (1 if r.name[0].isupper() else 2)
        assert (folder / "images" / f"{r.name}.jpg").is_file()


def test_sample_trimaps_have_pet_background_and_border_band(sample_root):
    folder = dataset_dir(sample_root)
    trimaps = [p for p in (folder / "annotations" / "trimaps").glob("*.png")
               if not p.name.startswith(".")]
    fractions = []
    for path in trimaps:
        t = read_trimap(path)
        assert set(np.unique(t)) == {1, 2, 3}
        fractions.append((t != 2).mean())
    # pets of varied scale: neither tiny nor filling the frame
    assert 0.03 < min(fractions) and max(fractions) < 0.9 and np.std(fractions) > 0.03


def test_sample_is_deterministic_for_a_seed(tmp_path):
    def digest(root):
        folder = dataset_dir(root)
        return hashlib.md5(b"".join(p.read_bytes() for p in sorted(folder.rglob("*"))
                                    if p.is_file() and p.suffix != ".json")).hexdigest()
    small = dict(n_trainval=10, n_test=5, size=64, progress=False)
    make_sample_dataset(tmp_path / "a", seed=3, **small)
    make_sample_dataset(tmp_path / "b", seed=3, **small)
    make_sample_dataset(tmp_path / "c", seed=4, **small)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_sample_refuses_to_overwrite_a_foreign_data_set(tmp_path):
    (dataset_dir(tmp_path) / "images").mkdir(parents=True)
    (dataset_dir(tmp_path) / "images" / "real.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a lab2 sample"):
        make_sample_dataset(tmp_path, n_trainval=10, n_test=5, size=64, progress=False)


# ---- audit --------------------------------------------------------------------------------------

def test_audit_finds_exactly_the_planted_files(sample_root):
    info = make_sample_dataset(sample_root, progress=False, **TEST_SAMPLE)  # reused, not redrawn
    report = audit_dataset(sample_root, progress=False, use_cache=False)
    found = {e.file: e.status for e in report.entries}
    assert found == {f: status for f, (status, _) in info.planted.items()}
    kinds = sorted(what for _, what in info.planted.values())
    assert kinds == sorted(["GIF data saved as .jpg", "RGBA PNG data saved as .jpg",
                            "grayscale JPEG", "truncated JPEG", "trimap missing",
                            "not an image (.mat)", "hidden ._ file", "hidden ._ file"])


def test_audit_explains_each_problem(sample_root):
    report = audit_dataset(sample_root, progress=False)
    problems = " | ".join(e.problem for e in report.entries)
    for phrase in ("GIF data saved as .jpg", "PNG data saved as .jpg", "RGBA image",
                   "grayscale image", "truncated", "not an image (a .mat file)", "trimap missing",
                   "hidden metadata file"):
        assert phrase in problems


def test_audit_flags_bad_trimap_values_and_sizes(tmp_path):
    make_sample_dataset(tmp_path, n_trainval=10, n_test=5, size=64, progress=False)
    folder = dataset_dir(tmp_path)
    names = [r.name for r in load_split(tmp_path, "test")]
    t_path = folder / "annotations" / "trimaps" / f"{names[0]}.png"
    import cv2
    t = read_trimap(t_path)
    t[0, 0] = 7
    cv2.imwrite(str(t_path), t)
    s_path = folder / "annotations" / "trimaps" / f"{names[1]}.png"
    cv2.imwrite(str(s_path), read_trimap(s_path)[:-3])
    report = audit_dataset(tmp_path, progress=False)
    problems = {e.name: e.problem for e in report.entries}
    assert "outside {1, 2, 3}" in problems[names[0]]
    assert "differs from the image" in problems[names[1]]
    assert {names[0], names[1]} <= report.skipped_names


def test_audit_is_cached_until_a_file_changes(tmp_path):
    make_sample_dataset(tmp_path, n_trainval=10, n_test=5, size=64, progress=False)
    first = audit_dataset(tmp_path, progress=False)
    assert audit_dataset(tmp_path, progress=False).to_dict() == first.to_dict()
    extra = dataset_dir(tmp_path) / "images" / "notes.txt"
    extra.write_text("not an image", encoding="utf-8")
    again = audit_dataset(tmp_path, progress=False)
    assert again.fingerprint != first.fingerprint
    assert "images/notes.txt" in {e.file for e in again.entries}


# ---- the data set's fingerprint ------------------------------------------------------------

@pytest.fixture
def tiny_root(tmp_path):
    make_sample_dataset(tmp_path / "data", n_trainval=10, n_test=5, size=64, progress=False)
    return tmp_path / "data"


def _same_size_edit(path) -> None:
    """Change a file's bytes, not its size (a corrected trimap, a re-saved photo can do that)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_edits_that_keep_every_file_size_change_the_fingerprint(tiny_root):
    # `sort trainval.txt` keeps its size and moves images between training and validation
    # (every 10th line is validation): the names-and-sizes fingerprint did not change, so a
    # run resumed, and a cache was used, on data they were not made from
    annotations = dataset_dir(tiny_root) / "annotations"
    before = fingerprint.dataset_fingerprint(tiny_root)
    names_and_sizes = fingerprint.names_and_sizes_fingerprint(tiny_root)
    lines = (annotations / "trainval.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (annotations / "trainval.txt").write_text("".join(sorted(lines)), encoding="utf-8")
    assert fingerprint.names_and_sizes_fingerprint(tiny_root) == names_and_sizes
    after_sort = fingerprint.dataset_fingerprint(tiny_root)
    assert after_sort != before
    _same_size_edit(next((annotations / "trimaps").iterdir()))
    assert fingerprint.dataset_fingerprint(tiny_root) not in (before, after_sort)
    assert fingerprint.names_and_sizes_fingerprint(tiny_root) == names_and_sizes


@pytest.fixture
def settled(monkeypatch):
    """Files count as settled at once (not written in the last seconds), so they are
    remembered; and the hashes this process remembers are forgotten before and after."""
    monkeypatch.setattr(fingerprint, "RECENT_S", 0.0)
    fingerprint._seen.clear()
    yield
    fingerprint._seen.clear()


def count_reads(monkeypatch) -> list:
    read = []
    original = fingerprint.atomic.file_digest
    monkeypatch.setattr(fingerprint.atomic, "file_digest",
                        lambda path: read.append(path) or original(path))
    return read


def test_a_later_command_reads_no_file_whose_stat_is_unchanged(tiny_root, settled, monkeypatch):
    first = fingerprint.dataset_fingerprint(tiny_root)
    assert fingerprint.memo_path(tiny_root).is_file()
    fingerprint._seen.clear()                           # a new process: only the memo file
    read = count_reads(monkeypatch)
    assert fingerprint.dataset_fingerprint(tiny_root) == first and read == []
    photo = next((dataset_dir(tiny_root) / "images").iterdir())
    _same_size_edit(photo)
    fingerprint._seen.clear()
    assert fingerprint.dataset_fingerprint(tiny_root) != first and read == [photo]


@pytest.mark.skipif(os.name == "nt", reason="a file's status-change time is POSIX's")
def test_a_file_edited_and_its_modification_time_set_back_is_read_again(tiny_root, settled):
    first = fingerprint.dataset_fingerprint(tiny_root)
    trimap = next((dataset_dir(tiny_root) / "annotations" / "trimaps").iterdir())
    times = trimap.stat()
    _same_size_edit(trimap)
    os.utime(trimap, ns=(times.st_atime_ns, times.st_mtime_ns))    # as `cp -p`, `touch -r` do
    assert trimap.stat().st_mtime_ns == times.st_mtime_ns
    fingerprint._seen.clear()
    assert fingerprint.dataset_fingerprint(tiny_root) != first


def test_a_file_written_within_the_file_systems_clock_tick_is_not_remembered(tiny_root,
                                                                            monkeypatch):
    # a coarse clock (FAT: 2 s) gives a file written twice within one tick the same times:
    # what was hashed then must not be taken for what is there now
    fingerprint._seen.clear()
    tick = time.time_ns()
    monkeypatch.setattr(fingerprint, "_stat_key",
                        lambda st: (st.st_size, tick, tick, st.st_ino))
    first = fingerprint.dataset_fingerprint(tiny_root)
    _same_size_edit(next((dataset_dir(tiny_root) / "images").iterdir()))
    assert fingerprint.dataset_fingerprint(tiny_root) != first
    fingerprint._seen.clear()
    assert fingerprint.dataset_fingerprint(tiny_root) != first


def test_the_fingerprint_needs_no_writable_or_sound_memo(tiny_root, settled, tmp_path,
                                                          monkeypatch):
    first = fingerprint.dataset_fingerprint(tiny_root)
    fingerprint._seen.clear()
    fingerprint.memo_path(tiny_root).write_text("{ damaged", encoding="utf-8")
    assert fingerprint.dataset_fingerprint(tiny_root) == first
    fingerprint._seen.clear()
    monkeypatch.setenv("LAB2_CACHE_DIR", str(tmp_path / "nowhere" / "cache"))
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere").chmod(0o555)
    try:
        assert fingerprint.dataset_fingerprint(tiny_root) == first
    finally:
        (tmp_path / "nowhere").chmod(0o755)


def test_a_file_that_cannot_be_read_is_left_to_the_audit(tiny_root, monkeypatch):
    # names and sizes needed no read: a photo without read permission must not turn every
    # command into a traceback (the audit names it and skips its sample)
    photo = sorted((dataset_dir(tiny_root) / "images").iterdir())[0]
    original = fingerprint.atomic.file_digest

    def no_permission(path):
        if path == photo:
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)
    monkeypatch.setattr(fingerprint.atomic, "file_digest", no_permission)
    first = fingerprint.dataset_fingerprint(tiny_root)
    monkeypatch.undo()
    fingerprint._seen.clear()
    assert fingerprint.dataset_fingerprint(tiny_root) != first


def test_a_copy_of_the_data_set_elsewhere_has_the_same_fingerprint(tiny_root, tmp_path):
    # what lets the machines of one run check that they hold the same data
    copy = tmp_path / "copy"
    shutil.copytree(dataset_dir(tiny_root), dataset_dir(copy))
    assert fingerprint.dataset_fingerprint(copy) == fingerprint.dataset_fingerprint(tiny_root)


def test_a_fingerprint_recorded_by_the_earlier_lab2_still_names_its_data(tiny_root):
    now = fingerprint.dataset_fingerprint(tiny_root)
    earlier = fingerprint.names_and_sizes_fingerprint(tiny_root)
    assert fingerprint.same_data(now, now, tiny_root)
    assert fingerprint.same_data(earlier, now, tiny_root)
    assert not fingerprint.same_data("0123456789abcdef", now, tiny_root)
    assert not fingerprint.same_data(None, now, tiny_root)


def test_recovered_images_read_as_three_channel_rgb(sample_root):
    info = make_sample_dataset(sample_root, progress=False, **TEST_SAMPLE)
    recovered = [f for f, (status, _) in info.planted.items() if status == "recovered"]
    assert len(recovered) == 3
    for rel in recovered:
        image = read_rgb(dataset_dir(sample_root) / rel)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


# ---- Dataset ------------------------------------------------------------------------------------

def test_dataset_items_are_float_image_long_mask_and_name(sample_root):
    ds = open_dataset(sample_root, "train", image_size=(48, 64), progress=False)
    image, mask, name = ds[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert mask.shape == (48, 64) and mask.dtype == torch.long
    assert set(mask.unique().tolist()) <= {0, 1}
    assert name == ds.names[0]


def test_a_spread_subset_of_a_list_sorted_by_breed_holds_every_breed():
    """The real lists are sorted by breed (90-odd images each): the quick profile's first 300
    training images were three and a half breeds and its first 100 test images Abyssinian cats."""
    from lab2.data.index import subset
    listed = [f"{breed}_{i}" for breed in BREEDS for i in range(1, 91)]
    breeds = {n.rsplit("_", 1)[0] for n in subset(listed, 300)}
    assert breeds == set(BREEDS)
    assert len({n.rsplit("_", 1)[0] for n in subset(listed, 300, "first")}) == 4
    assert len({n.rsplit("_", 1)[0] for n in subset(listed, 100, "first")}) == 2
    spread = subset(listed, 300)
    assert len(spread) == len(set(spread)) == 300
    assert spread == [n for n in listed if n in set(spread)]                # the list's order
    assert subset(listed, None) == listed == subset(listed, 10**6)
    assert subset(list(range(10)), 3) == [0, 3, 6]
    assert subset(list(range(10)), 3, "first") == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown subset 'random'"):
        subset(listed, 3, "random")


def test_a_dataset_cut_to_a_profile_size_spreads_over_the_split(tmp_path):
    make_sample_dataset(tmp_path, n_trainval=40, n_test=30, size=64, progress=False)
    test_list = dataset_dir(tmp_path) / "annotations" / "test.txt"
    lines = sorted(test_list.read_text(encoding="utf-8").splitlines())   # by breed, as the real
    test_list.write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole = open_dataset(tmp_path, "test", 32, progress=False).names
    spread = open_dataset(tmp_path, "test", 32, max_samples=5, progress=False).names
    first = open_dataset(tmp_path, "test", 32, max_samples=5, subset="first",
                                  progress=False).names
    assert first == whole[:5]
    assert spread == [whole[i * len(whole) // 5] for i in range(5)]


def test_dataset_excludes_skipped_samples_and_says_so_once(tmp_path):
    from lab2.ops.notices import SkippedFilesWarning
    make_sample_dataset(tmp_path, n_trainval=10, n_test=5, size=64, progress=False)
    report = audit_dataset(tmp_path, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")          # Python's own: each message once
        for split in ("trainval", "test"):
            ds = open_dataset(tmp_path, split, image_size=32, progress=False)
            assert not set(ds.names) & report.skipped_names
            for i in range(len(ds)):  # every remaining sample reads without error
                ds[i]
    said = [str(w.message) for w in caught if issubclass(w.category, SkippedFilesWarning)]
    assert len(said) == 1 and said[0].startswith("skipping")
    assert all(name in said[0] for name in report.skipped_names)


def test_the_skipped_files_warning_names_a_dozen_and_counts_the_rest(tmp_path):
    """A data set with many unusable files (trimaps lost) gave one warning line with every name
    in it: thousands for a damaged copy of the real data set."""
    from lab2.ops.loaders import NAMED_SKIPS
    from lab2.ops.notices import SkippedFilesWarning
    make_sample_dataset(tmp_path, n_trainval=40, n_test=5, size=64, progress=False)
    trimaps = sorted((dataset_dir(tmp_path) / "annotations" / "trimaps").glob("[!.]*.png"))
    for path in trimaps[:30]:
        path.unlink()
    skipped = audit_dataset(tmp_path, progress=False).skipped_names
    assert len(skipped) > NAMED_SKIPS + 10
    with pytest.warns(SkippedFilesWarning) as caught:
        open_dataset(tmp_path, "trainval", image_size=32, progress=False)
    said = str(caught[0].message)
    assert f"skipping {len(skipped)} unusable" in said
    assert f"and {len(skipped) - NAMED_SKIPS} more" in said
    assert sum(name in said for name in skipped) == NAMED_SKIPS


def test_dataset_applies_an_albumentations_style_transform(sample_root):
    def flip(image, mask):
        return {"image": image[:, ::-1], "mask": mask[:, ::-1]}
    plain = open_dataset(sample_root, "val", image_size=32, progress=False)
    flipped = open_dataset(sample_root, "val", image_size=32, transform=flip,
                                    progress=False)
    assert torch.equal(plain[0][1].flip(-1), flipped[0][1])


# ---- command line --------------------------------------------------------------------------------

def test_cli_sample_then_audit_prints_the_planted_files(tmp_path, capsys):
    assert cli.main(["sample", "--root", str(tmp_path), "--n-trainval", "10", "--n-test", "5",
                     "--size", "64"]) == 0
    planted = make_sample_dataset(tmp_path, n_trainval=10, n_test=5, size=64).planted
    capsys.readouterr()
    json_path = tmp_path / "audit.json"
    assert cli.main(["audit", "--root", str(tmp_path), "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    for file in planted:
        assert file in out
    assert json_path.is_file()


def test_cli_bad_argument_is_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["sample", "--size", "-3"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--size" in err and "must be positive" in err


def test_cli_unknown_option_is_told_by_its_command_with_the_nearest_one(capsys):
    # argparse said it at the top level: "python -m lab2: error: unrecognized arguments: ...
    # (see python -m lab2 --help)", whose help lists only the commands
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["experiment", "--paralel", "2"])
    assert excinfo.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "python -m lab2 experiment: error: unrecognized arguments: --paralel 2; did you mean "
        "--parallel? (see python -m lab2 experiment --help)")
    with pytest.raises(SystemExit):
        cli.main(["predict", "--checkpoint", "best.pt", "--image", "cat.jpg"])
    assert capsys.readouterr().err.strip() == (
        "python -m lab2 predict: error: unrecognized arguments: --image (see python -m lab2 "
        "predict --help)")


def test_cli_every_command_has_help(capsys):
    for command in ("download", "audit", "sample", "report"):
        with pytest.raises(SystemExit) as excinfo:
            cli.main([command, "--help"])
        assert excinfo.value.code == 0
        assert "usage:" in capsys.readouterr().out
