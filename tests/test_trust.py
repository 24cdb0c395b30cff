"""Table 1 is never wrong in silence: a run folder's role, checkpoints damaged in place, leaks
between the splits, exact resume whatever the thread count, user files next to the sample, odd
file names and broken tables, and messages that say what really happened. Each test fails on
the lab2 before the fix it names."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from cli_output import one_line_error

from lab2.config import profile_config
from lab2.ops import atomic, cli

SMOKE = dict(image_size=64, base_channels=4, epochs=1, batch_size=4, max_train_samples=8,
             max_eval_samples=4, num_workers=0, device="cpu")


def smoke(**changes):
    return profile_config("smoke", **{**SMOKE, **changes})


def train_command(root, out, *extra) -> list[str]:
    return ["train", "--model", "unet", "--root", str(root), "--out", str(out), "--profile",
            "smoke", "--epochs", "1", "--base-channels", "4", *extra]


# ---- messages that said something else than what happened ---------------------------------

def test_a_full_disk_at_the_first_save_does_not_advise_resume(sample_root, tmp_path,
                                                               monkeypatch, capsys):
    """Nothing was saved before the first checkpoint: --resume would be refused."""
    import lab2.ops.checkpoint as checkpoint_module

    def full(state, path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    code = cli.main(train_command(sample_root, tmp_path / "run"))
    line = one_line_error(capsys)
    assert code == 1 and "disk is full" in line and "last.pt" in line
    assert "--resume" not in line and "run the same command again" in line


def test_a_file_size_limit_is_not_called_a_full_disk(tmp_path, monkeypatch):
    def too_large(*args):
        raise OSError(errno.EFBIG, "File too large")
    monkeypatch.setattr(atomic.os, "fsync", too_large)
    with pytest.raises(atomic.StorageError) as caught:
        atomic.write_text(tmp_path / "x.txt", "x")
    text = str(caught.value)
    assert "disk is full" not in text and "file-size limit" in text and "ulimit" in text


def test_torch_s_short_write_under_a_file_size_limit_names_the_limit(tmp_path, monkeypatch):
    """torch.save reports a refused write without an errno ("unexpected pos"): with room on the
    disk and a file-size limit set, the limit is what stopped it."""
    import resource
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1 << 20, 1 << 20)
                        if which == resource.RLIMIT_FSIZE else (resource.RLIM_INFINITY,) * 2)
    error = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 94")
    text = str(atomic.storage_error(tmp_path / "last.pt", error))
    assert "disk is full" not in text and "file-size limit of 1.0 MiB" in text


def test_sizes_in_a_free_space_message_differ_when_the_numbers_do(tmp_path, monkeypatch):
    class Usage:
        free = atomic.SPARE_BYTES + 9 * 2**20
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(atomic.StorageError) as caught:
        atomic.check_free_space(tmp_path, 10 * 2**20, "the cache", "use --cache-dir")
    text = str(caught.value)
    need, free = text.split("needs ")[1].split(" but ")[0], text.split(" has ")[1].split(" free")[0]
    assert need != free, text
    assert need == "10.0 MiB" and free == "73.0 MiB"


def test_a_root_that_is_a_file_says_so(tmp_path, capsys):
    root = tmp_path / "data.zip"
    root.write_bytes(b"PK")
    for command in (["audit", "--root", str(root)], train_command(root, tmp_path / "run")):
        assert cli.main(command) == 1
        line = one_line_error(capsys)
        assert f"{root} is a file; give the folder that holds" in line, line


def test_a_real_file_size_limit_at_a_checkpoint_save_is_named(tmp_path):
    import subprocess
    import sys
    code = ("import resource, sys, torch; "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000)); "
            "from lab2.ops.checkpoint import save_checkpoint; "
            "save_checkpoint(sys.argv[1], {'model': torch.zeros(100000), 'config': {}, "
            "'epoch': 1})")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "last.pt")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "file-size limit of 97.7 KiB" in done.stderr and "disk is full" not in done.stderr
    assert not list(tmp_path.iterdir())          # no temporary file left behind


# ---- odd files in the data set ---------------------------------------------------------------

@pytest.fixture
def small_root(tmp_path):
    from lab2.ops.sample import make_sample_dataset
    make_sample_dataset(tmp_path / "data", n_trainval=20, n_test=6, size=64, progress=False)
    return tmp_path / "data"


def folder_of(root) -> Path:
    from lab2.data.index import dataset_dir
    return dataset_dir(root)


def test_a_file_name_that_is_not_utf8_is_listed_by_the_audit_and_blocks_nothing(
        small_root, tmp_path, capsys):
    """A file copied from an old Windows or Mac disk can have a name that is not UTF-8; every
    command stopped with "'utf-8' codec can't encode ..."."""
    import os
    images = os.fsencode(folder_of(small_root) / "images")
    with open(images + b"/caf\xe9.jpg", "wb") as f:
        f.write((folder_of(small_root) / "images").joinpath(
            sorted(os.listdir(folder_of(small_root) / "images"))[-1]).read_bytes())
    assert cli.main(["audit", "--root", str(small_root), "--workers", "1"]) == 0
    table = capsys.readouterr().out
    assert "images/caf\\xe9.jpg" in table and "not valid UTF-8" in table
    assert cli.main(train_command(small_root, tmp_path / "run")) == 0


def test_an_image_over_the_pixel_limit_is_called_too_large_not_truncated(small_root,
                                                                          monkeypatch):
    from PIL import Image

    from lab2.data.index import load_split
    from lab2.ops.audit import SKIPPED, audit_dataset, check_image
    name = load_split(small_root, "train")[0].name
    path = folder_of(small_root) / "images" / f"{name}.jpg"
    Image.new("RGB", (300, 200)).save(path, format="JPEG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)   # a bomb is 2x over the limit
    status, problem = check_image(path)
    assert status == SKIPPED
    assert problem == ("too large to decode: 300x200 = 60,000 pixels, over Pillow's limit of "
                       "20,000 (a guard against decompression bombs)")
    report = audit_dataset(small_root, progress=False, workers=1, use_cache=False)
    assert name in report.skipped_names


def test_a_symlink_loop_in_the_data_folder_is_listed_and_passed_over(small_root, capsys):
    images = folder_of(small_root) / "images"
    (images / "loop_a.jpg").symlink_to(images / "loop_b.jpg")
    (images / "loop_b.jpg").symlink_to(images / "loop_a.jpg")
    assert cli.main(["audit", "--root", str(small_root), "--workers", "1"]) == 0
    table = capsys.readouterr().out
    assert "images/loop_a.jpg" in table and "symbolic link" in table


def test_a_16_bit_trimap_reports_the_values_it_holds(small_root):
    import numpy as np
    from PIL import Image

    from lab2.data.index import load_split
    from lab2.data.reading import read_trimap
    from lab2.ops.audit import SKIPPED, check_trimap
    name = load_split(small_root, "train")[0].name
    path = folder_of(small_root) / "annotations" / "trimaps" / f"{name}.png"
    trimap = read_trimap(path)
    Image.fromarray(trimap.astype(np.uint16) * 257).save(path)      # a 16-bit copy, 1 → 257
    status, problem = check_trimap(path, None)
    assert status == SKIPPED
    assert "values [257, 514, 771] outside {1, 2, 3}" in problem, problem
    assert "scaled by 257" in problem


def test_predict_segments_the_readable_photos_of_a_folder_and_names_the_broken_one(
        small_root, tmp_path, capsys):
    """--help says files that are not photos are named at the end and the others segmented; one
    truncated JPEG stopped the whole folder."""
    import numpy as np
    from PIL import Image

    from lab2.ops.trainer import train
    train(smoke(), small_root, tmp_path / "run", progress=False)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(
            folder / name)
    (folder / "cut.jpg").write_bytes((folder / "a.jpg").read_bytes()[:300])
    out = tmp_path / "out"
    code = cli.main(["predict", "--checkpoint", str(tmp_path / "run" / "best.pt"), str(folder),
                     "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png",
                                                     "b_mask.png", "b_overlay.png"]
    line = one_line_error(capsys, captured.err)
    assert "1 of the inputs left out" in line and f"{folder / 'cut.jpg'}: truncated" in line


# ---- broken records ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ['{"version": 4, "table": [{"mod', '{"version": 4}', "[]"])
def test_a_broken_results_json_is_one_line_naming_the_command_that_rewrites_it(tmp_path, text):
    """Truncated by a copy, or edited by hand: a JSONDecodeError (or KeyError) traceback in
    notebook 04 before; now one line lab2 raises itself (a notebook shows it as that line)."""

    from lab2.ops.experiment import load_experiment
    from lab2.ops.notebook import raised_by_lab2
    out = tmp_path / "exp"
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps(
        {"root": str(tmp_path / "data"), "profile": "smoke"}), encoding="utf-8")
    (out / "results.json").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        load_experiment(out)
    message = str(caught.value)
    assert message.startswith(f"{out / 'results.json'} is damaged") or "older lab2" in message
    assert (f"python -m lab2 experiment --root {tmp_path / 'data'} --profile smoke --out {out}"
            in message)
    assert raised_by_lab2(caught.tb)


def test_a_broken_experiment_json_is_one_line(tmp_path, sample_root, capsys):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "experiment.json").write_text('{"dataset_fing', encoding="utf-8")
    code = cli.main(["experiment", "--root", str(sample_root), "--profile", "smoke", "--out",
                     str(out), "--epochs", "1"])
    line = one_line_error(capsys)
    assert code == 1 and f"{out / 'experiment.json'} is damaged" in line


# ---- checkpoints damaged in place -----------------------------------------------------------

def damage_weights(path: Path, n: int = 400) -> None:
    """Flip ``n`` bytes in the middle of the largest tensor of a checkpoint, in place: the file
    keeps its length and stays a readable zip archive (what a failing disk or a bad copy does)."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", f.read(4))
        start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
        f.seek(start)
        data = bytearray(f.read(n))
        f.seek(start)
        f.write(bytes(b ^ 0x5A for b in data))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, sample_root):
    from lab2.ops.trainer import train
    out = tmp_path_factory.mktemp("damage") / "unet_raw"
    train(smoke(epochs=1), sample_root, out, progress=False)
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    import shutil
    out = tmp_path / "exp" / "unet_raw"
    shutil.copytree(trained_run, out)
    return out


def test_evaluate_refuses_a_best_pt_damaged_in_place_and_writes_no_metric(run_copy, capsys):
    damage_weights(run_copy / "best.pt")
    assert cli.main(["evaluate", "--checkpoint", str(run_copy / "best.pt")]) == 1
    line = one_line_error(capsys)
    assert f"{run_copy / 'best.pt'} is damaged: its entry data/" in line
    assert "fails its CRC-32 check" in line and "nothing was computed from it" in line
    assert f"python -m lab2 train --out {run_copy} --resume" in line   # last.pt holds the best
    assert not (run_copy / "metrics.json").exists()


def test_the_rebuild_the_message_names_restores_best_pt_exactly(run_copy, capsys):
    intact = (run_copy / "best.pt").read_bytes()
    damage_weights(run_copy / "best.pt")
    assert cli.main(["train", "--out", str(run_copy), "--resume"]) == 0
    assert (run_copy / "best.pt").read_bytes() == intact


def test_a_damaged_best_pt_that_last_pt_cannot_rebuild_says_to_train_again(run_copy, capsys):
    (run_copy / "last.pt").unlink()
    damage_weights(run_copy / "best.pt")
    assert cli.main(["evaluate", "--checkpoint", str(run_copy / "best.pt")]) == 1
    line = one_line_error(capsys)
    assert "is damaged" in line and "train the run again" in line


def test_the_experiment_tests_no_damaged_weights(run_copy, sample_root, tmp_path):
    """Its Table 1 row comes from best.pt rebuilt from last.pt (which holds the best epoch),
    the same numbers as from the intact file."""
    from lab2.ops.experiment import run_experiment
    tiny = dict(epochs=1, base_channels=4, max_train_samples=8, max_eval_samples=4,
                image_size=64, batch_size=4, num_workers=0, device="cpu")
    intact, _ = run_experiment("smoke", sample_root, run_copy.parent, progress=False,
                               runs=[("unet", False)], **tiny)
    (run_copy / "metrics.json").unlink()
    damage_weights(run_copy / "best.pt")
    again, _ = run_experiment("smoke", sample_root, run_copy.parent, progress=False,
                              runs=[("unet", False)], **tiny)
    assert again[0]["dice"] == intact[0]["dice"]


def test_resuming_a_damaged_last_pt_is_one_line_with_the_way_back(run_copy, capsys):
    damage_weights(run_copy / "last.pt")
    assert cli.main(["train", "--out", str(run_copy), "--resume", "--epochs", "2"]) == 1
    line = one_line_error(capsys)
    assert f"{run_copy / 'last.pt'} is damaged" in line
    assert f"cp {run_copy / 'best.pt'} {run_copy / 'last.pt'}" in line


def test_a_damaged_checkpoint_is_refused_where_a_table_reads_it(run_copy):
    """The notebooks' figures load weights through load_trained_model with the SHA-256 the table
    names: the file checked against it is checked entry by entry too."""
    from lab2.ops.atomic import file_digest
    from lab2.ops.checkpoint import DamagedCheckpoint
    from lab2.ops.evaluation import load_trained_model
    damage_weights(run_copy / "best.pt")
    with pytest.raises(DamagedCheckpoint):
        load_trained_model(run_copy / "best.pt", sha256=file_digest(run_copy / "best.pt"))


# ---- a run folder's role ----------------------------------------------------------------------

#: The settings of train_command, as an experiment's flags.
TINY_EXPERIMENT = dict(epochs=1, base_channels=4)


def test_the_experiment_refuses_a_folder_named_for_a_run_it_does_not_hold(sample_root, tmp_path,
                                                                          capsys):
    """`train --model unet --out e/unet_preprocessed` without --preprocess filled Table 1's row
    "UNet | yes" with the raw UNet (difference +0.0000)."""
    from lab2.ops.experiment import run_experiment
    from lab2.ops.runs import WrongRun
    exp = tmp_path / "e"
    assert cli.main(train_command(sample_root, exp / "unet_preprocessed")) == 0
    with pytest.raises(WrongRun) as caught:
        run_experiment("smoke", sample_root, exp, progress=False,
                       runs=[("unet", False), ("unet", True)], **TINY_EXPERIMENT)
    message = str(caught.value)
    assert message == (
        f"{exp / 'unet_preprocessed'} holds UNet without preprocessing, seed 0 (its last.pt's "
        "settings), but that folder is for UNet with preprocessing, seed 0; move it out of the "
        f"way (mv {exp / 'unet_preprocessed'} {exp / 'unet_raw'}) and run the same command "
        "again, which trains the run that belongs there")
    assert not (exp / "unet_raw").exists()           # refused before anything trained
    # the move the message names mends it: the run becomes the raw row, the other is trained
    (exp / "unet_preprocessed").rename(exp / "unet_raw")
    rows, _ = run_experiment("smoke", sample_root, exp, progress=False,
                             runs=[("unet", False), ("unet", True)], **TINY_EXPERIMENT)
    assert [(r["model"], r["preprocess"]) for r in rows] == [("unet", False), ("unet", True)]


def test_a_resnet_checkpoint_copied_into_a_unet_folder_is_refused(sample_root, tmp_path, capsys):
    import shutil
    exp = tmp_path / "e"
    assert cli.main(["train", "--model", "resnet34_unet", "--root", str(sample_root), "--out",
                     str(tmp_path / "resnet"), "--profile", "smoke", "--epochs", "1",
                     "--base-channels", "4"]) == 0
    (exp / "unet_raw").mkdir(parents=True)
    for name in ("last.pt", "best.pt"):
        shutil.copy(tmp_path / "resnet" / name, exp / "unet_raw" / name)
    code = cli.main(["experiment", "--root", str(sample_root), "--profile", "smoke", "--out",
                     str(exp), "--epochs", "1", "--base-channels", "4"])
    line = one_line_error(capsys)
    assert code == 1 and "holds ResNet34-UNet without preprocessing" in line
    assert f"mv {exp / 'unet_raw'} {exp / 'resnet34_unet_raw'}" in line
    # and evaluate, given that folder's best.pt, says the same before testing anything
    assert cli.main(["evaluate", "--checkpoint", str(exp / "unet_raw" / "best.pt")]) == 1
    line = one_line_error(capsys)
    assert "holds ResNet34-UNet" in line and "its best.pt's settings" in line
    assert not (exp / "unet_raw" / "metrics.json").exists()


def test_tables_written_from_a_mislabelled_folder_are_refused_with_the_move_not_a_rewrite(
        sample_root, tmp_path, monkeypatch):
    """A results.json that an earlier lab2 wrote from a mislabelled folder matches its files
    hash for hash: load_experiment (notebook 04) must say what is wrong, not show it, and not
    send the user to the experiment command as if the tables were merely out of date."""
    import lab2.ops.evaluation as evaluate_module
    import lab2.ops.experiment as experiment_module
    from lab2.ops.experiment import ResultsOutOfDate, load_experiment, run_experiment
    from lab2.ops.runs import WrongRun
    exp = tmp_path / "e"
    assert cli.main(train_command(sample_root, exp / "unet_preprocessed")) == 0
    monkeypatch.setattr(experiment_module, "check_role", lambda *args, **kwargs: None)
    monkeypatch.setattr(evaluate_module, "check_role", lambda *args, **kwargs: None)
    run_experiment("smoke", sample_root, exp, progress=False, runs=[("unet", True)],
                   **TINY_EXPERIMENT)
    monkeypatch.undo()
    with pytest.raises(WrongRun) as caught:
        load_experiment(exp, sample_root)
    assert not isinstance(caught.value, ResultsOutOfDate)
    assert f"mv {exp / 'unet_preprocessed'} {exp / 'unet_raw'}" in str(caught.value)
    assert "python -m lab2 experiment" in str(caught.value)


# ---- leaks between the splits ---------------------------------------------------------------

def test_the_list_checks_are_pure_functions_of_the_records():
    from lab2.data.index import parse_list
    from lab2.ops.audit import listed_twice, shared_names
    trainval = parse_list("a_1 1 1 1\nb_1 2 2 1\na_1 1 1 1\nc_1 1 1 1\nb_1 2 2 1\n")
    test = parse_list("d_1 1 1 1\nc_1 1 1 1\nb_1 2 2 1\n")
    assert listed_twice(trainval) == ["a_1", "b_1"]
    assert shared_names(trainval, test) == ["c_1", "b_1"]
    assert listed_twice(test) == [] and shared_names(test, []) == []


def append_lines(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def test_test_ids_listed_in_trainval_are_reported_and_refused(small_root, tmp_path, capsys):
    from lab2.data.index import load_split
    annotations = folder_of(small_root) / "annotations"
    test = load_split(small_root, "test")
    # six test ids also in trainval (one of them twice), the way a hand-made split goes wrong
    append_lines(annotations / "trainval.txt", [r.line() for r in test[:6]] + [test[0].line()])
    assert cli.main(["audit", "--root", str(small_root), "--workers", "1"]) == 0
    table = capsys.readouterr().out
    assert f"annotations/trainval.txt lists 1 id twice: {test[0].name}" in table
    assert ("annotations/test.txt and trainval.txt both list 6 ids (train and experiment "
            "refuse the data set)") in table
    for command in (train_command(small_root, tmp_path / "run"),
                    ["experiment", "--root", str(small_root), "--profile", "smoke", "--out",
                     str(tmp_path / "exp"), "--epochs", "1"]):
        assert cli.main(command) == 1
        line = one_line_error(capsys)
        names = ", ".join(r.name for r in test[:5])
        assert (f"put test images into training or validation: 6 ids of test.txt also in "
                f"trainval.txt ({names} and 1 more)") in line, line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_identical_images_under_two_ids_are_reported_and_refused_across_test(small_root,
                                                                             capsys, tmp_path):
    from lab2.data.index import load_split
    images = folder_of(small_root) / "images"
    trimaps = folder_of(small_root) / "annotations" / "trimaps"
    train, test = load_split(small_root, "train"), load_split(small_root, "test")
    usable = train[10:]                                    # past the planted odd files

    def copy(source: str, target: str) -> None:           # a photo and its trimap, renamed
        for folder, suffix in ((images, ".jpg"), (trimaps, ".png")):
            (folder / f"{target}{suffix}").write_bytes((folder / f"{source}{suffix}").read_bytes())

    # a copy within training: reported only; a test photo copied into training: refused
    copy(usable[0].name, usable[1].name)
    assert cli.main(["audit", "--root", str(small_root), "--workers", "1"]) == 0
    table = capsys.readouterr().out
    assert f"same bytes under 2 ids: trainval:{usable[0].name} = trainval:{usable[1].name}" in table
    assert cli.main(train_command(small_root, tmp_path / "ok")) == 0
    capsys.readouterr()
    copy(test[0].name, usable[2].name)
    assert cli.main(train_command(small_root, tmp_path / "run")) == 1
    line = one_line_error(capsys)
    assert "1 test image with the same bytes as a training or validation image" in line
    assert f"trainval:{usable[2].name} = test:{test[0].name}" in line or \
        f"test:{test[0].name} = trainval:{usable[2].name}" in line


# ---- exact resume, whatever the thread count ----------------------------------------------------

@pytest.fixture
def threads():
    """Set PyTorch's CPU threads for a part of a test; the count is restored after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_a_run_resumed_with_another_thread_count_ends_with_the_same_weights(
        sample_root, tmp_path, threads):
    """`experiment --parallel 2` trains each run with 1 thread on 2 cores; the same command run
    again after a child was killed resumed it with 2: other sums, other weights. The count is
    now recorded in the checkpoint and restored on resume."""
    import lab2.ops.trainer as train_module
    from lab2.ops.checkpoint import load_checkpoint
    config = smoke(epochs=2, base_channels=8, max_train_samples=16, dropout_kind="element")
    threads(1)
    train_module.train(config, sample_root, tmp_path / "straight", progress=False)
    train_module.train(config.replace(epochs=1), sample_root, tmp_path / "resumed",
                       progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["cpu_threads"] == 1
    threads(2)
    train_module.train(config, sample_root, tmp_path / "resumed", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["history"] == [{**h, "seconds": a["history"][i]["seconds"]}
                            for i, h in enumerate(b["history"])]
    assert torch.get_num_threads() == 2           # the process's own count, given back after


@pytest.mark.slow
def test_a_parallel_experiment_with_a_killed_run_resumes_it_to_the_same_weights(sample_root,
                                                                                tmp_path):
    """The real case: `experiment --parallel 2` on 2 cores (a thread per run), one run's process
    SIGKILLed (the out-of-memory killer): the other runs finish, the command ends with one line
    naming the killed run, and the same command again resumes it in a process of its own, with
    both cores' threads, to the weights of an experiment that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys

    from interrupts import start_until

    from lab2.ops import locks
    from lab2.ops.checkpoint import load_checkpoint
    from lab2.ops.experiment import load_results
    flags = ["--profile", "smoke", "--parallel", "2", "--epochs", "3", "--base-channels", "8",
             "--max-train-samples", "16", "--max-eval-samples", "4", "--device", "cpu",
             "--dropout-kind", "element"]

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "lab2", "experiment", "--root", str(sample_root),
                "--out", str(out), *flags]
    # the uninterrupted reference: the two UNet runs are enough (two workers of a thread each,
    # as the killed experiment's; the killed run is a UNet)
    from lab2.ops.experiment import run_experiment
    run_experiment("smoke", sample_root, tmp_path / "straight", progress=False, parallel=2,
                   runs=(("unet", False), ("unet", True)), epochs=3, base_channels=8,
                   max_train_samples=16, max_eval_samples=4, device="cpu",
                   dropout_kind="element")
    out = tmp_path / "killed"
    proc = start_until(command(out), lambda: (out / "unet_raw" / "last.pt").exists())
    # the process that trains unet_raw owns its folder's lock
    owner = Path(f"{locks.folder_lock(out / 'unet_raw')}.owner")
    victim = json.loads(owner.read_text(encoding="utf-8"))["pid"]
    os.kill(victim, signal.SIGKILL)
    err = proc.communicate(timeout=600)[1]
    # (Python's resource tracker may still report the semaphores of a killed run's cache-build
    # pool, which it then removes: a warning after lab2's line, not a traceback)
    assert proc.returncode == 1 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: parallel training failed for unet_raw: the process was "
                           "killed by SIGKILL") and line.count("killed by") == 1 and \
        line.endswith("run the same command again to resume"), line
    assert len(list(out.glob("*/last.pt"))) == 4     # the other runs were trained meanwhile
    assert load_checkpoint(out / "unet_raw" / "last.pt")["epoch"] < 3
    again = subprocess.run(command(out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    # one bar counts the epochs of the run that was left, from where it had got to
    assert "1 runs: 100%" in again.stderr and "| 3/3 [" in again.stderr, again.stderr
    assert all(r["epochs"] == 3 for r in load_results(out)[0])
    for run in ("unet_raw", "unet_preprocessed"):
        a = load_checkpoint(tmp_path / "straight" / run / "last.pt")["model"]
        b = load_checkpoint(out / run / "last.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), run


# ---- the sample never deletes what the user put beside it --------------------------------------

SAMPLE_A = dict(seed=0, n_trainval=12, n_test=5, size=64, progress=False)
SAMPLE_B = dict(seed=1, n_trainval=14, n_test=6, size=64, progress=False)


def user_files(folder: Path) -> dict[str, bytes]:
    (folder / "notes.txt").write_text("my notes", encoding="utf-8")
    (folder / "images" / "my_cat.jpg").write_bytes(b"my own photo")
    (folder / "mine").mkdir()
    (folder / "mine" / "labels.csv").write_text("a,b\n", encoding="utf-8")
    return {name: (folder / name).read_bytes()
            for name in ("notes.txt", "images/my_cat.jpg", "mine/labels.csv")}


def test_a_sample_with_other_settings_is_not_replaced_without_the_flag(tmp_path, capsys):
    from lab2.ops.sample import make_sample_dataset
    make_sample_dataset(tmp_path, **SAMPLE_A)
    folder = folder_of(tmp_path)
    mine = user_files(folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    code = cli.main(["sample", "--root", str(tmp_path), "--seed", "1", "--n-trainval", "14",
                     "--n-test", "6", "--size", "64"])
    line = one_line_error(capsys)
    assert code == 1 and line == (
        f"error: {folder} holds a lab2 sample made with other settings (--seed 0 --n-trainval 12 "
        "--n-test 5 --size 64, not --seed 1 --n-trainval 14 --n-test 6 --size 64); pass "
        "--overwrite (python -m lab2 sample --overwrite ...) to replace its files, which keeps "
        "every file lab2 did not write there, or choose another --root")
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert all((folder / name).read_bytes() == data for name, data in mine.items())


@pytest.mark.parametrize("manifest_lists_files", [True, False])
def test_overwrite_replaces_the_samples_files_and_keeps_the_users(tmp_path,
                                                                  manifest_lists_files):
    from lab2.data.index import load_split
    from lab2.ops.sample import MANIFEST, make_sample_dataset
    make_sample_dataset(tmp_path, **SAMPLE_A)
    folder = folder_of(tmp_path)
    if not manifest_lists_files:       # a sample written before manifests listed its files
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        del manifest["files"]
        (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    old_names = {r.name for r in load_split(tmp_path, "trainval")}
    mine = user_files(folder)
    info = make_sample_dataset(tmp_path, overwrite=True, **SAMPLE_B)
    assert info.n_trainval == 14 and len(load_split(tmp_path, "trainval")) == 14
    assert all((folder / name).read_bytes() == data for name, data in mine.items())
    new_names = {r.name for r in load_split(tmp_path, "trainval") + load_split(tmp_path, "test")}
    gone = old_names - new_names
    assert gone and not any((folder / "images" / f"{n}.jpg").exists() for n in gone)
    assert not list(tmp_path.glob(".oxford-iiit-pet.partial-*"))


class Killed(BaseException):
    """Stands for SIGKILL at one instant: nothing after it runs."""


def test_a_kill_between_moving_the_old_sample_aside_and_the_new_one_in_loses_nothing(
        tmp_path, monkeypatch):
    from lab2.ops import sample as sample_module
    from lab2.ops.sample import make_sample_dataset
    make_sample_dataset(tmp_path, **SAMPLE_A)
    folder = folder_of(tmp_path)
    mine = user_files(folder)
    original = sample_module.atomic.replace

    def replace(source, target):
        if Path(target) == folder:     # the old folder is aside, the new one not yet in place
            raise Killed
        original(source, target)
    monkeypatch.setattr(sample_module.atomic, "replace", replace)
    with pytest.raises(Killed):
        make_sample_dataset(tmp_path, overwrite=True, **SAMPLE_B)
    monkeypatch.undo()
    assert not folder.exists()
    make_sample_dataset(tmp_path, **SAMPLE_A)           # the next command puts it back
    assert all((folder / name).read_bytes() == data for name, data in mine.items())
    make_sample_dataset(tmp_path, overwrite=True, **SAMPLE_B)
    assert all((folder / name).read_bytes() == data for name, data in mine.items())


def test_overwrite_refuses_when_a_users_file_sits_where_the_new_sample_writes(tmp_path):
    from lab2.data.index import load_split
    from lab2.ops.sample import make_sample_dataset
    make_sample_dataset(tmp_path, **SAMPLE_B)
    names = [r.name for r in load_split(tmp_path, "trainval")]
    make_sample_dataset(tmp_path / "a", **SAMPLE_A)   # which names does sample A not have?
    folder = folder_of(tmp_path / "a")
    a_names = {r.name for r in load_split(tmp_path / "a", "trainval")} | {
        r.name for r in load_split(tmp_path / "a", "test")}
    name = next(n for n in names if n not in a_names)
    (folder / "images" / f"{name}.jpg").write_bytes(b"the user's own photo")
    with pytest.raises(ValueError, match="lab2 did not write where the new sample writes"):
        make_sample_dataset(tmp_path / "a", overwrite=True, **SAMPLE_B)
    assert (folder / "images" / f"{name}.jpg").read_bytes() == b"the user's own photo"
