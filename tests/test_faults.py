"""What survives what: kills at unlucky moments, two commands at once, full disks, read-only
folders, odd inputs. Each test simulates one fault at the exact instant it bites (by raising
there, or with a second real process) and checks that the user gets one clear line and a state
the next command continues from. docs/reliability.md lists what the user gets for each."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cli_output import one_line_error
from interrupts import alive, descendants_of
from PIL import Image

import lab2.ops.runs as runs_module
import lab2.ops.trainer as train_module
from lab2.config import profile_config
from lab2.data.index import dataset_dir
from lab2.data.reading import read_rgb
from lab2.ops import atomic, cli, locks
from lab2.ops import cache as cache_module
from lab2.ops import sample as sample_module
from lab2.ops.atomic import file_digest
from lab2.ops.audit import OK, RECOVERED, check_image
from lab2.ops.cache import build_cache, find_cache
from lab2.ops.checkpoint import load_checkpoint, save_checkpoint
from lab2.ops.evaluation import evaluate_checkpoint
from lab2.ops.experiment import load_results, run_experiment
from lab2.ops.fingerprint import dataset_fingerprint, names_and_sizes_fingerprint
from lab2.ops.loaders import open_dataset
from lab2.ops.runs import is_finished, read_history, run_summary, saved_config
from lab2.ops.sample import make_sample_dataset
from lab2.ops.trainer import train
from lab2.preprocess import PreprocessParams
from lab2.train import NonFiniteLossError

PROJECT = Path(__file__).resolve().parent.parent
SMOKE = dict(image_size=64, base_channels=4, epochs=2, batch_size=4, max_train_samples=8,
             max_eval_samples=4, num_workers=0, device="cpu")
TINY = dict(epochs=2, base_channels=4, max_train_samples=8, max_eval_samples=4)


def smoke(**changes):
    return profile_config("smoke", **{**SMOKE, **changes})


class Killed(BaseException):
    """Stands for SIGKILL at one instant: nothing after it runs, no handler catches it."""


def kill_on_call(monkeypatch, module, name, when):
    """Make ``module.name`` raise Killed on the call for which ``when(args)`` is true."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        if when(*args):
            raise Killed(name)
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)


def hold_lock(path: Path) -> subprocess.Popen:
    """A second real process that holds a lab2 lock until killed."""
    code = ("import sys, time; from lab2.ops.locks import owned; "
            "held = owned(sys.argv[1], 'x'); held.__enter__(); print('held', flush=True); "
            "time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True, cwd=PROJECT)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ---- a run counted finished that is not -------------------------------------------------

def test_a_kill_while_the_final_checkpoint_is_written_leaves_the_run_unfinished(
        sample_root, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    kill_on_call(monkeypatch, train_module, "save_checkpoint",
                 lambda path, state: Path(path).name == "last.pt" and state["epoch"] == 2)
    with pytest.raises(Killed):
        train(smoke(), sample_root, out, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not is_finished(out)     # history.csv never runs ahead of the weights
    assert [h["epoch"] for h in read_history(out / "history.csv")] == [1]
    rows, _ = run_experiment("smoke", sample_root, tmp_path / "exp", progress=False,
                             runs=[("unet", False)], **TINY)
    assert rows[0]["epochs"] == 2


def test_the_experiment_trains_a_run_whose_history_is_ahead_of_its_checkpoint(
        sample_root, tmp_path):
    """What the old order (history.csv, then last.pt) left after a kill between the two: the
    experiment must resume the run, not test an older best.pt as if it were finished."""
    exp = tmp_path / "exp"
    config = smoke(epochs=1, **{k: v for k, v in TINY.items() if k != "epochs"})
    train(config, sample_root, exp / "unet_raw", progress=False)
    history = read_history(exp / "unet_raw" / "history.csv")
    runs_module.write_history(exp / "unet_raw" / "history.csv",
                               history + [{**history[0], "epoch": 2}])
    rows, _ = run_experiment("smoke", sample_root, exp, progress=False,
                             runs=[("unet", False)], **TINY)
    assert load_checkpoint(exp / "unet_raw" / "last.pt")["epoch"] == 2
    assert rows[0]["epochs"] == 2
    assert rows[0]["best_val_dice"] == max(h["val_dice"] for h in run_summary(
        exp / "unet_raw")["history"])


def test_a_kill_before_best_pt_is_copied_is_repaired_from_last_pt(sample_root, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "run"
    kill_on_call(monkeypatch, train_module, "copy_checkpoint",
                 lambda source, target: load_checkpoint(source)["epoch"] == 1)
    with pytest.raises(Killed):
        train(smoke(epochs=1), sample_root, out, progress=False)
    monkeypatch.undo()
    assert is_finished(out) and not (out / "best.pt").exists()
    runs_module.reconcile_run(out)
    assert load_checkpoint(out / "best.pt")["epoch"] == 1


def test_ctrl_c_during_a_checkpoint_write_names_the_epoch_last_pt_holds(
        sample_root, tmp_path, monkeypatch, caplog):
    original = train_module.save_checkpoint

    def interrupted(path, state):
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        original(path, state)
    monkeypatch.setattr(train_module, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(smoke(), sample_root, tmp_path / "run", progress=False)
    assert "holds epoch 1" in caplog.text and "holds epoch 2" not in caplog.text


# ---- two cache builds at once ----------------------------------------------------------

@pytest.fixture
def small_root(tmp_path):
    make_sample_dataset(tmp_path / "data", n_trainval=20, n_test=6, size=64, progress=False)
    return tmp_path / "data"


def no_zero_rows(cache) -> bool:
    cache._open()
    return all(cache._images[i].any() for i in range(len(cache.names)))


def test_a_second_cache_build_waits_for_the_first_and_uses_its_result(small_root, monkeypatch):
    original = cache_module._fill_row
    filled = []

    def slow(job):
        filled.append(threading.get_ident())
        time.sleep(0.02)
        return original(job)
    monkeypatch.setattr(cache_module, "_fill_row", slow)
    first = threading.Thread(target=build_cache, args=(small_root, 32, None),
                             kwargs=dict(progress=False, workers=1))
    first.start()
    while not filled:
        time.sleep(0.005)
    second = build_cache(small_root, 32, None, progress=False, workers=1)
    first.join()
    assert set(filled) == {first.ident}            # the second build filled no row itself
    assert find_cache(small_root, 32, None) is not None and no_zero_rows(second)


@pytest.mark.slow
def test_two_real_preprocess_commands_at_once_both_succeed_with_one_good_cache(small_root):
    command = [sys.executable, "-m", "lab2", "preprocess", "--root", str(small_root),
               "--image-size", "64", "--workers", "2"]
    procs = [subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    cache = find_cache(small_root, 64, cache_module.PreprocessParams())
    assert cache is not None and no_zero_rows(cache)
    assert not list(cache.folder.parent.glob("*.partial*"))


def test_a_truncated_cache_array_is_detected_and_rebuilt(small_root):
    cache = build_cache(small_root, 32, None, progress=False, workers=1)
    images = cache.folder / "images.npy"
    with open(images, "r+b") as f:
        f.truncate(images.stat().st_size - 1000)
    assert find_cache(small_root, 32, None) is None
    assert open_dataset(small_root, "train", 32, progress=False).cache is None
    rebuilt = build_cache(small_root, 32, None, progress=False, workers=1)
    ds = open_dataset(small_root, "train", 32, progress=False)
    assert ds.cache is not None and ds[0][0].shape == (3, 32, 32) and no_zero_rows(rebuilt)


def test_a_cache_without_its_completion_marker_is_not_used(small_root):
    cache = build_cache(small_root, 32, None, progress=False, workers=1)
    (cache.folder / "meta.json").unlink()
    assert find_cache(small_root, 32, None) is None


# ---- stale Table 1 numbers -------------------------------------------------------------

def test_an_experiment_folder_refuses_runs_of_another_data_set(sample_root, tmp_path, capsys):
    exp = tmp_path / "exp"
    run_experiment("smoke", sample_root, exp, progress=False, runs=[("unet", False)], **TINY)
    other = tmp_path / "other"
    make_sample_dataset(other, seed=1, n_trainval=40, n_test=20, size=96, progress=False)
    code = cli.main(["experiment", "--profile", "smoke", "--root", str(other), "--out", str(exp),
                     "--epochs", "2", "--base-channels", "4"])
    assert code == 1
    line = one_line_error(capsys)
    assert "another --out" in line and "fingerprint" in line


def test_a_run_refuses_to_resume_on_another_data_set(sample_root, tmp_path):
    out = tmp_path / "run"
    train(smoke(epochs=1), sample_root, out, progress=False)
    other = tmp_path / "other"
    make_sample_dataset(other, seed=1, n_trainval=40, n_test=20, size=96, progress=False)
    with pytest.raises(ValueError, match="trained on the synthetic sample.*--root"):
        train(smoke(epochs=2), other, out, resume=True, progress=False)


def sort_split_list(root) -> None:
    """``sort trainval.txt``: the same size, other images in validation (every 10th line)."""
    listing = dataset_dir(root) / "annotations" / "trainval.txt"
    lines = listing.read_text(encoding="utf-8").splitlines(keepends=True)
    listing.write_text("".join(sorted(lines)), encoding="utf-8")


def test_a_run_refuses_to_resume_after_its_data_changed_without_a_size_changing(small_root,
                                                                                 tmp_path):
    # the fingerprint of names and sizes missed it: the run went on, validated on other images
    # and trained on the ones it had validated on
    out = tmp_path / "run"
    train(smoke(epochs=1), small_root, out, progress=False)
    sort_split_list(small_root)
    with pytest.raises(ValueError, match="holds other data.*changed since.*point --root"):
        train(smoke(epochs=2), small_root, out, resume=True, progress=False)


def test_results_recorded_with_the_earlier_fingerprint_are_still_accepted(small_root, tmp_path):
    # runs, folders and tables recorded before the content fingerprint name their data by
    # names and sizes: an upgrade must not turn hours of training away
    out = tmp_path / "exp"
    run_experiment("smoke", small_root, out, progress=False, runs=[("unet", False)], **TINY)
    earlier = names_and_sizes_fingerprint(small_root)
    last = out / "unet_raw" / "last.pt"
    state = load_checkpoint(last)
    save_checkpoint(last, {**state, "data": {**state["data"], "fingerprint": earlier}})
    folder = json.loads((out / "experiment.json").read_text(encoding="utf-8"))
    atomic.write_json(out / "experiment.json", {**folder, "dataset_fingerprint": earlier})
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for row in results["runs"]:
        row["evaluation_key"]["dataset_fingerprint"] = earlier
    atomic.write_json(out / "results.json", results)
    from lab2.ops.experiment import load_experiment
    load_experiment(out, small_root)                       # not refused
    rows, _ = run_experiment("smoke", small_root, out, progress=False, runs=[("unet", False)],
                             **{**TINY, "epochs": 3})      # resumes the run, tests it again
    assert rows[0]["epochs"] == 3
    now = dataset_fingerprint(small_root)                  # recorded by content from now on
    assert load_checkpoint(last)["data"]["fingerprint"] == now
    assert json.loads((out / "experiment.json").read_text(encoding="utf-8"))[
        "dataset_fingerprint"] == now
    sort_split_list(small_root)                            # and a real change is still refused
    with pytest.raises(ValueError, match="holds runs of the synthetic sample"):
        run_experiment("smoke", small_root, out, progress=False, runs=[("unet", False)], **TINY)


def test_the_cache_of_data_that_changed_since_is_removed_when_the_new_one_is_built(small_root,
                                                                                  caplog):
    # each cache holds the whole data set (15 GiB for both variants at 512 px): a stale one
    # left beside the new one could fill the disk the new one needs
    def build(size: int, params: PreprocessParams | None) -> Path:
        return build_cache(small_root, size, params, progress=False, workers=1).folder

    old_raw, old_preprocessed = build(32, None), build(32, PreprocessParams())
    other_size = build(40, None)
    sort_split_list(small_root)
    with caplog.at_level("INFO", logger="lab2"):
        new_raw, new_preprocessed = build(32, None), build(32, PreprocessParams())
    assert new_raw != old_raw and new_preprocessed != old_preprocessed
    assert not old_raw.exists() and not old_preprocessed.exists() and other_size.is_dir()
    assert not list(old_raw.parent.glob("*.partial*"))
    assert f"removed the cache {old_raw}" in caplog.text


def test_evaluating_a_run_on_other_data_says_so(small_root, tmp_path, caplog):
    # a legitimate use (a model of the sample tried on real photos), but the numbers must not
    # pass for the run's own test set
    out = tmp_path / "run"
    train(smoke(epochs=1), small_root, out, progress=False)
    with caplog.at_level("WARNING", logger="lab2"):
        evaluate_checkpoint(out / "best.pt", small_root, progress=False)
    assert "was trained on" not in caplog.text
    sort_split_list(small_root)
    with caplog.at_level("WARNING", logger="lab2"):
        evaluate_checkpoint(out / "best.pt", small_root, progress=False)
    assert f"{out / 'best.pt'} was trained on the synthetic sample" in caplog.text
    assert "files of it changed since" in caplog.text


def test_stored_test_metrics_are_reused_only_for_the_same_weights(sample_root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(smoke(epochs=1), sample_root, a, progress=False)
    train(smoke(epochs=1, seed=1), sample_root, b, progress=False)
    first = evaluate_checkpoint(a / "best.pt", sample_root, progress=False, reuse=True)
    assert evaluate_checkpoint(a / "best.pt", sample_root, progress=False,
                               reuse=True) == first                      # same key: reused
    stat = (a / "best.pt").stat()
    (a / "best.pt").write_bytes((b / "best.pt").read_bytes())            # other weights,
    os.utime(a / "best.pt", ns=(stat.st_atime_ns, stat.st_mtime_ns))     # same timestamp
    again = evaluate_checkpoint(a / "best.pt", sample_root, progress=False, reuse=True)
    assert again["key"]["checkpoint_sha256"] != first["key"]["checkpoint_sha256"]
    assert again["dice"] == evaluate_checkpoint(b / "best.pt", sample_root,
                                                progress=False)["dice"]



def test_a_per_image_file_left_without_its_metrics_is_never_reused(sample_root, tmp_path,
                                                                   monkeypatch):
    # killed between the two files of an evaluation with other settings (python -m lab2
    # evaluate writes them too): a new per-image file beside the old metrics.json, whose key
    # still matches; the experiment reused those metrics and compared the images of the other
    # file, so Table 1 and its comparisons came from two different evaluations
    import lab2.ops.evaluation as evaluate_module
    from lab2.ops.evaluation import measure_checkpoint, per_image_path, save_evaluation
    a = tmp_path / "a"
    train(smoke(epochs=1), sample_root, a, progress=False)
    first = evaluate_checkpoint(a / "best.pt", sample_root, progress=False, reuse=True)
    metrics, rows = measure_checkpoint(a / "best.pt", sample_root, progress=False,
                                       max_samples=2)
    kill_on_call(monkeypatch, evaluate_module.atomic, "write_json", lambda path, *_: True)
    with pytest.raises(Killed):
        save_evaluation(a / "best.pt", metrics, rows)
    monkeypatch.undo()
    again = evaluate_checkpoint(a / "best.pt", sample_root, progress=False, reuse=True)
    lines = per_image_path(a, "test").read_text(encoding="utf-8").splitlines()
    assert len(lines) - 1 == again["n_images"] == first["n_images"] == 4
    assert again["dice"] == first["dice"]


def test_results_that_no_longer_belong_to_their_runs_are_refused_with_the_mending_command(
        sample_root, tmp_path, monkeypatch):
    # notebook 04 shows Table 1 from results.json beside figures made from the run folders: a
    # run trained on, or tested again, after the tables were written made the two disagree
    import shlex

    import lab2.ops.experiment as experiment_module
    from lab2.ops.experiment import ResultsOutOfDate, load_experiment
    out = tmp_path / "exp"
    assert cli.main(["experiment", "--root", str(sample_root), "--out", str(out), "--profile",
                     "smoke", "--device", "cpu", "--max-train-samples", "8"]) == 0
    load_experiment(out, sample_root)                                      # fresh: accepted

    def mend(why: str) -> None:
        with pytest.raises(ResultsOutOfDate, match=why) as caught:
            load_experiment(out, sample_root)
        command = str(caught.value).split("up to date with: python -m lab2 ")[1]
        assert cli.main(shlex.split(command.split(" (finished runs")[0])) == 0
        load_experiment(out, sample_root)
    run = out / "unet_raw"
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 0
    mend(r"unet_raw was trained on after it \(last.pt holds epoch 3, the table epoch 2\)")
    assert load_results(out)[0][0]["epochs"] == 3                           # mended
    assert cli.main(["evaluate", "--checkpoint", str(run / "best.pt"), "--root",
                     str(sample_root), "--all"]) == 0
    mend("unet_raw/per_image_test.csv is not the file it was made from")
    shutil.copytree(run, tmp_path / "kept")
    (run / "best.pt").write_bytes((out / "unet_preprocessed" / "best.pt").read_bytes())
    with pytest.raises(ResultsOutOfDate, match="unet_raw/best.pt is not the checkpoint it "):
        load_experiment(out)
    shutil.rmtree(run)
    with pytest.raises(ResultsOutOfDate, match="unet_raw has no last.pt or best.pt any more"):
        load_experiment(out)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "--seeds" not in experiment_module._refresh_command(out, results)
    assert experiment_module._refresh_command(out, {**results, "seeds": [0, 2]}).endswith(
        " --seeds 0 2")
    atomic.write_json(out / "results.json", {**results, "version": 1})
    with pytest.raises(ResultsOutOfDate, match="an older lab2 wrote it"):
        load_experiment(out)
    atomic.write_json(out / "results.json", results)
    shutil.copytree(tmp_path / "kept", run)
    load_experiment(out)
    monkeypatch.setattr(experiment_module, "dataset_fingerprint", lambda root: "0123456789abcdef")
    with pytest.raises(ResultsOutOfDate, match="the data set in .* has changed since"):
        load_experiment(out, sample_root)


def test_tables_left_by_a_kill_before_results_json_are_not_shown_as_its_own(
        sample_root, tmp_path, monkeypatch):
    # the tables for people are written before results.json: a kill in between left the new
    # results.md beside the old results.json, which still matched its runs, so notebook 04
    # showed a Table 1 of two runs beside figures drawn from the JSON's table of one
    import lab2.ops.experiment as experiment_module
    from lab2.ops.experiment import ResultsOutOfDate, load_experiment
    out, one, two = tmp_path / "exp", [("unet", False)], [("unet", False), ("unet", True)]
    run_experiment("smoke", sample_root, out, progress=False, runs=one, **TINY)
    kill_on_call(monkeypatch, experiment_module.atomic, "write_json",
                 lambda path, *_: Path(path).name == "results.json")
    with pytest.raises(Killed):
        run_experiment("smoke", sample_root, out, progress=False, runs=two, **TINY)
    monkeypatch.undo()
    assert "| unet | yes |" in (out / "results.md").read_text(encoding="utf-8")
    with pytest.raises(ResultsOutOfDate, match="results.csv beside it is not the one it was "
                       "written with"):     # the first table written, then results.md, ...
        load_experiment(out)
    run_experiment("smoke", sample_root, out, progress=False, runs=two, **TINY)
    mended = load_experiment(out)
    assert len(mended["table"]) == 2
    assert mended["markdown"] == (out / "results.md").read_text(encoding="utf-8")
    with open(out / "histories.csv", "a", encoding="utf-8") as f:       # edited by hand
        f.write("\n")
    with pytest.raises(ResultsOutOfDate, match="histories.csv beside it"):
        load_experiment(out)


def test_the_comparisons_use_the_evaluation_of_their_table_1_row(sample_root, tmp_path,
                                                                 monkeypatch):
    # an evaluate command writing a run's per-image file once the experiment had tested that run
    # (its folder free again) but before it compared the runs: the comparisons used that file
    import lab2.ops.experiment as experiment_module
    from lab2.ops.evaluation import measure_checkpoint, save_evaluation
    out = tmp_path / "exp"
    runs = [("unet", False), ("unet", True)]
    run_experiment("smoke", sample_root, out, progress=False, runs=runs, **TINY)
    original = experiment_module.table_rows

    def evaluate_meanwhile(rows):
        best = out / "unet_raw" / "best.pt"
        save_evaluation(best, *measure_checkpoint(best, sample_root, progress=False,
                                                  max_samples=2))
        return original(rows)
    monkeypatch.setattr(experiment_module, "table_rows", evaluate_meanwhile)
    (out / "unet_raw" / "metrics.json").unlink()          # tested again by the experiment
    table, _ = run_experiment("smoke", sample_root, out, progress=False, runs=runs, **TINY)
    comparisons = json.loads((out / "results.json").read_text(encoding="utf-8"))["comparisons"]
    assert table[0]["n_test"] == 4 and {c["n_images"] for c in comparisons} == {4}


def test_the_figures_read_the_runs_table_1_was_made_from(tmp_path):
    # a seed folder left from an earlier experiment with more seeds is not averaged in
    from lab2.ops.notebook import per_image_dice
    for folder, dice in (("unet_raw", 0.5), ("unet_raw_seed1", 0.9), ("unet_raw_seed2", 0.1)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "per_image_test.csv").write_text(
            f"name,dice\nAbyssinian_1,{dice}\n", encoding="utf-8")
    runs = [{"run": folder, "model": "unet", "preprocess": False, "seed": seed,
             "per_image_sha256": file_digest(tmp_path / folder / "per_image_test.csv")}
            for seed, folder in enumerate(("unet_raw", "unet_raw_seed1"))]
    assert per_image_dice(tmp_path, runs) == {"unet_raw": {"Abyssinian_1": pytest.approx(0.7)}}
    assert per_image_dice(tmp_path, runs[:1]) == {"unet_raw": {"Abyssinian_1": 0.5}}


def test_the_figures_refuse_a_file_changed_after_results_json_was_checked(sample_root,
                                                                          tmp_path):
    # notebook 04 checks results.json against its runs in its first cells, and reads the
    # per-image files and best.pt cells later: a run tested or trained again in between (by a
    # command at the same time) put other images or weights under the table it had checked
    from lab2.ops.atomic import ChangedSince
    from lab2.ops.experiment import load_experiment
    from lab2.ops.notebook import load_models, per_image_dice
    out = tmp_path / "exp"
    run_experiment("smoke", sample_root, out, progress=False, runs=[("unet", False)], **TINY)
    runs = load_experiment(out)["runs"]
    assert len(per_image_dice(out, runs)["unet_raw"]) == 4 and list(load_models(out, runs)) == [
        "unet_raw"]
    per_image = out / "unet_raw" / "per_image_test.csv"
    atomic.write_text(per_image, "\n".join(per_image.read_text(encoding="utf-8").splitlines()[:3]))
    with pytest.raises(ChangedSince, match="unet_raw/per_image_test.csv changed after"):
        per_image_dice(out, runs)
    best = out / "unet_raw" / "best.pt"
    state = load_checkpoint(best)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(best, state)                                        # other weights
    with pytest.raises(ChangedSince, match="unet_raw/best.pt changed after"):
        load_models(out, runs)

# ---- one owner per run folder ----------------------------------------------------------

def test_a_second_train_on_a_busy_run_folder_stops_naming_the_owner(sample_root, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    holder = hold_lock(locks.folder_lock(out))
    try:
        code = cli.main(["train", "--model", "resnet34_unet", "--root", str(sample_root),
                         "--out", str(out), "--profile", "smoke", "--epochs", "1",
                         "--base-channels", "4"])
        assert code == 1
        assert f"PID {holder.pid}" in one_line_error(capsys)
        assert not (out / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    # the SIGKILLed owner leaves no lock behind
    train(smoke(epochs=1), sample_root, out, progress=False)
    assert (out / "last.pt").is_file()


def test_a_second_experiment_on_a_busy_folder_stops(sample_root, tmp_path):
    exp = tmp_path / "exp"
    holder = hold_lock(locks.folder_lock(exp))
    try:
        with pytest.raises(locks.BusyError, match=f"PID {holder.pid}"):
            run_experiment("smoke", sample_root, exp, progress=False, **TINY)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK])
def test_a_file_system_that_cannot_lock_files_is_named_with_the_fix(sample_root, tmp_path,
                                                                     monkeypatch, capsys, code):
    """Some network and cloud-drive mounts have no flock: the lock failed with "cannot write
    …/.lab2.lock: Function not implemented; check the folder and try again"."""
    import fcntl

    def no_flock(fd, operation):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(fcntl, "flock", no_flock)
    assert cli.main(["train", "--model", "unet", "--root", str(sample_root), "--out",
                     str(tmp_path / "run"), "--profile", "smoke", "--epochs", "1"]) == 1
    line = one_line_error(capsys)
    assert "cannot lock files" in line and "cloud-drive" in line and "local disk" in line
    assert not (tmp_path / "run" / "last.pt").exists()


# ---- an interrupted sample generation ---------------------------------------------------

def test_an_interrupted_sample_leaves_nothing_that_blocks_the_next_call(tmp_path, monkeypatch):
    calls = []
    original = sample_module._draw_sample

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(sample_module, "_draw_sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_sample_dataset(tmp_path, n_trainval=20, n_test=6, size=64, progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "oxford-iiit-pet").exists()
    info = make_sample_dataset(tmp_path, n_trainval=20, n_test=6, size=64, progress=False)
    assert info.n_trainval == 20 and (tmp_path / "oxford-iiit-pet" / ".lab2-sample.json").is_file()
    assert not list(tmp_path.glob(".oxford-iiit-pet.partial-*"))


def test_a_partial_sample_left_by_a_killed_call_is_removed(tmp_path):
    leftover = tmp_path / ".oxford-iiit-pet.partial-abc123"
    (leftover / "images").mkdir(parents=True)
    make_sample_dataset(tmp_path, n_trainval=20, n_test=6, size=64, progress=False)
    assert not leftover.exists()


# ---- predict reports only files it wrote -------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_root):
    out = tmp_path_factory.mktemp("faults") / "run"
    train(smoke(epochs=1), sample_root, out, progress=False)
    return out


def photo(path: Path, size=(40, 56)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), np.uint8)).save(path)
    return path


def test_predict_gives_inputs_with_the_same_stem_distinct_outputs(trained, tmp_path):
    images = [photo(tmp_path / "a" / "cat.jpg"), photo(tmp_path / "b" / "cat.png")]
    segmented, problems = predict_files_cli(trained, images, tmp_path / "out")
    written = [path for _, *files in segmented for path in files]
    assert not problems and [image for image, *_ in segmented] == images
    assert len(set(written)) == 4 and all(p.stat().st_size > 0 for p in written)


def predict_files_cli(trained, images, out):
    from lab2.ops.predict import predict_files
    return predict_files(trained / "best.pt", images, out)


def test_predict_into_a_folder_it_cannot_write_is_one_line_and_exit_1(trained, tmp_path, capsys):
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the output folder should be", encoding="utf-8")
    code = cli.main(["predict", "--checkpoint", str(trained / "best.pt"),
                     str(photo(tmp_path / "cat.jpg")), "--out", str(blocked)])
    assert code == 1 and "cannot write" in one_line_error(capsys)


def test_predict_segments_a_folder_and_names_every_input_it_left_out(trained, tmp_path, capsys):
    # a student's photos/ folder as Windows and macOS leave it, a typo, an iPhone photo
    folder = tmp_path / "photos"
    photos = [photo(folder / "cat.jpg"), photo(folder / "dog.png")]
    (folder / "Thumbs.db").write_bytes(bytes(64))
    (folder / ".DS_Store").write_bytes(bytes(64))
    (folder / "notes").mkdir()
    (folder / "page.jpg").write_text("<html>Sign in</html>", encoding="utf-8")  # a web page
    (folder / "copy.png").write_bytes(b"")                                      # a cut copy
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    out = tmp_path / "out"
    code = cli.main(["predict", "--checkpoint", str(trained / "best.pt"), str(folder),
                     str(tmp_path / "bird.jpg"), str(heic), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["cat_mask.png", "cat_overlay.png",
                                                     "dog_mask.png", "dog_overlay.png"]
    assert [line.split(" -> ")[0] for line in captured.out.splitlines()] == list(map(str, photos))
    line = one_line_error(capsys, captured.err)
    assert line.startswith("error: 4 of the inputs left out, the photos above segmented: ")
    assert f"{folder / 'page.jpg'}: not an image" in line
    assert f"{folder / 'copy.png'}: an empty file (an interrupted copy or download?)" in line
    assert f"{tmp_path / 'bird.jpg'}: no such file or folder" in line
    assert f"{heic}: not an image (HEIC: export the photo as JPEG" in line


def test_predict_names_every_photo_it_cannot_read_and_segments_the_others(trained, tmp_path):
    good = photo(tmp_path / "cat.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    segmented, problems = predict_files_cli(trained, [good, cut, tmp_path / "gone.jpg"],
                                            tmp_path / "out")
    assert [image for image, *_ in segmented] == [good]
    assert len(problems) == 2 and "cut.jpg: truncated" in problems[0]
    assert problems[1] == f"{tmp_path / 'gone.jpg'}: no such file"
    with pytest.raises(ValueError, match=r"cannot read any of the 2 photos: .*cut.jpg: truncated"):
        predict_files_cli(trained, [cut, tmp_path / "gone.jpg"], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_predict_on_a_full_disk_says_so(trained, tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", full)
    code = cli.main(["predict", "--checkpoint", str(trained / "best.pt"),
                     str(photo(tmp_path / "cat.jpg")), "--out", str(tmp_path / "p")])
    assert code == 1 and "disk is full" in one_line_error(capsys)
    assert not list((tmp_path / "p").glob("*.png"))


# ---- resume with changed settings ------------------------------------------------------

def test_resume_applies_a_new_learning_rate_and_records_it(sample_root, tmp_path):
    out = tmp_path / "run"
    train(smoke(epochs=1), sample_root, out, progress=False)
    assert cli.main(["train", "--out", str(out), "--resume", "--epochs", "2",
                     "--lr", "0.0001"]) == 0
    history = read_history(out / "history.csv")
    assert [h["lr"] for h in history] == [1e-3, 1e-4]
    assert saved_config(out).lr == 1e-4
    changes = json.loads((out / "run.json").read_text(encoding="utf-8"))["changes"]
    assert {"epoch": 1, "field": "lr", "from": 1e-3, "to": 1e-4} in changes


def test_resume_refuses_a_setting_that_cannot_change_and_restart_applies_it(
        sample_root, tmp_path, capsys):
    out = tmp_path / "run"
    train(smoke(epochs=1), sample_root, out, progress=False)
    code = cli.main(["train", "--out", str(out), "--resume", "--image-size", "32"])
    assert code == 1 and "--restart" in one_line_error(capsys)
    assert cli.main(["train", "--model", "unet", "--root", str(sample_root), "--out", str(out),
                     "--restart", "--profile", "smoke", "--image-size", "32", "--epochs", "1",
                     "--base-channels", "4"]) == 0
    assert saved_config(out).image_size == 32


@pytest.fixture
def poison_at(monkeypatch):
    """``poison_at(epoch)``: an ``on_batch`` that turns the weights NaN at the first batch of
    ``epoch`` (0-based) of the model the run builds."""
    built = []
    original = train_module.model_for
    monkeypatch.setattr(train_module, "model_for",
                        lambda *a, **k: built.append(original(*a, **k)) or built[-1])

    def at(epoch):
        def poison(e, batch):
            if e == epoch and batch == 0:
                with torch.no_grad():
                    for p in built[-1].parameters():
                        p.fill_(float("nan"))
        return poison
    return at


def test_the_non_finite_loss_message_names_a_command_that_works(sample_root, tmp_path,
                                                                poison_at):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError) as caught:
        train(smoke(), sample_root, out, progress=False, on_batch=poison_at(1))
    command = str(caught.value).split("continue with: python -m lab2 ")[1].split(" (or")[0]
    assert command.startswith("train --out") and "--lr 0.0001" in command
    assert cli.main(command.split()) == 0
    assert is_finished(out)


def test_a_non_finite_loss_before_any_epoch_says_to_start_again_not_to_resume(
        sample_root, tmp_path, poison_at):
    # there is no last.pt to resume: the message used to say --resume, which is then refused
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError) as caught:
        train(smoke(), sample_root, out, progress=False, on_batch=poison_at(0))
    assert "nothing was trained; run the same command with --lr 0.0001" in str(caught.value)
    assert "--resume" not in str(caught.value) and not (out / "last.pt").exists()


# ---- disk and permission errors --------------------------------------------------------

def test_a_cache_build_without_room_is_one_line_naming_the_fix(small_root, monkeypatch, capsys):
    class Usage:
        free = 1000
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: Usage)
    code = cli.main(["preprocess", "--root", str(small_root), "--image-size", "32"])
    line = one_line_error(capsys)
    assert code == 1 and " but " in line and "iB free" in line and "--cache-dir" in line
    assert not list((small_root / "cache").glob("*.partial*"))


def test_a_run_without_room_for_the_cache_trains_without_it_to_the_same_weights(
        sample_root, tmp_path, monkeypatch):
    """The cache only saves time (a 512 px experiment's caches take 14 GiB): a run whose disk
    has no room for it (a home folder's quota on a cluster) stopped; it now reads the images
    each time, says so once, and trains to the weights a run with the cache reaches."""
    from lab2.ops.notices import NoCacheWarning
    config = profile_config("smoke", epochs=1, base_channels=4, num_workers=0, device="cpu",
                            preprocess=True)
    train(config, sample_root, tmp_path / "cached", progress=False)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    copy = tmp_path / "copy"
    shutil.copytree(sample_root / "oxford-iiit-pet", copy / "oxford-iiit-pet")   # no cache yet
    with pytest.warns(NoCacheWarning, match="no cache: the cache .* needs .* and preprocessed"):
        train(config, copy, tmp_path / "direct", progress=False)
    assert find_cache(copy, config.image_size, cache_module.PreprocessParams()) is None
    a = load_checkpoint(tmp_path / "cached" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "direct" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_disk_filling_up_while_the_cache_is_allocated_is_one_line(small_root, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache_module.os, "posix_fallocate", full, raising=False)
    with pytest.raises(atomic.StorageError, match="disk is full.*--cache-dir"):
        build_cache(small_root, 32, None, progress=False, workers=1)
    assert not list((small_root / "cache").glob("*.partial*"))


def test_a_full_disk_during_a_checkpoint_save_names_the_file(sample_root, tmp_path,
                                                             monkeypatch, capsys):
    import lab2.ops.checkpoint as checkpoint_module

    def short_write(state, path):
        Path(path).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 94")
    monkeypatch.setattr(checkpoint_module.torch, "save", short_write)
    code = cli.main(["train", "--model", "unet", "--root", str(sample_root), "--out",
                     str(tmp_path / "run"), "--profile", "smoke", "--epochs", "1",
                     "--base-channels", "4"])
    line = one_line_error(capsys)
    assert code == 1 and "last.pt" in line and "disk is full" in line
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_a_read_only_data_root_says_to_move_the_cache_and_cache_dir_does(
        small_root, tmp_path, monkeypatch, capsys):
    before = sorted(p for p in small_root.rglob("*"))
    original_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(small_root)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return original_mkdir(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", read_only)
    code = cli.main(["preprocess", "--root", str(small_root), "--image-size", "32"])
    line = one_line_error(capsys)
    assert code == 1 and "read-only" in line and "--cache-dir" in line
    monkeypatch.setenv("LAB2_CACHE_DIR", "")   # restored (unset) after the test: the CLI sets it
    assert cli.main(["preprocess", "--root", str(small_root), "--image-size", "32",
                     "--cache-dir", str(tmp_path / "elsewhere")]) == 0
    assert sorted(p for p in small_root.rglob("*")) == before
    assert find_cache(small_root, 32, cache_module.PreprocessParams(),
                      cache_root=tmp_path / "elsewhere") is not None


@pytest.fixture
def read_only_home(tmp_path, monkeypatch):
    """LAB2_HOME in a folder where nothing can be created (EROFS), as a course folder mounted
    read-only on a JupyterHub; returns it."""
    import lab2.ops.paths as paths_module
    home = tmp_path / "course"
    for name in ("LAB2_DATA_DIR", "LAB2_SAMPLE_DIR", "LAB2_FIGURES_DIR", "LAB2_PROFILE"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("LAB2_HOME", str(home))
    original_mkdir, original_file = Path.mkdir, paths_module.tempfile.TemporaryFile

    def refuse(path):
        if str(path).startswith(str(home)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def mkdir(self, *args, **kwargs):
        refuse(self)
        return original_mkdir(self, *args, **kwargs)

    def temporary_file(*args, dir=None, **kwargs):
        refuse(dir)
        return original_file(*args, dir=dir, **kwargs)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(paths_module.tempfile, "TemporaryFile", temporary_file)
    return home


def test_a_read_only_project_stops_the_notebooks_first_cell_saying_to_set_lab2_home(
        read_only_home):
    from lab2.ops.notebook import setup
    with pytest.raises(atomic.StorageError) as raised:
        setup("smoke")
    message = str(raised.value)
    assert str(read_only_home / "runs") in message and "%env LAB2_HOME=" in message
    assert "--root" not in message             # a notebook has no command-line flags
    assert not (read_only_home / "data").exists()


def test_a_read_only_project_stops_report_before_any_work(read_only_home, monkeypatch, capsys):
    import lab2.ops.experiment as experiment_module
    monkeypatch.setattr(experiment_module, "run_experiment",
                        lambda *a, **k: pytest.fail("the experiment ran before the check"))
    code = cli.main(["report", "--no-download", "--profile", "smoke"])
    line = one_line_error(capsys)
    assert code == 1 and "runs" in line and "set LAB2_HOME to a writable folder" in line
    assert not (read_only_home / "data").exists()             # no sample was drawn


def test_report_with_a_read_only_notebooks_folder_says_what_to_do(tmp_path, monkeypatch,
                                                                  capsys):
    import lab2.ops.paths as paths_module
    monkeypatch.setenv("LAB2_HOME", str(tmp_path))
    notebooks = paths_module.notebooks_dir()
    original_file = paths_module.tempfile.TemporaryFile

    def temporary_file(*args, dir=None, **kwargs):
        if Path(dir) == notebooks:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return original_file(*args, dir=dir, **kwargs)
    monkeypatch.setattr(paths_module.tempfile, "TemporaryFile", temporary_file)
    import lab2.ops.experiment as experiment_module
    monkeypatch.setattr(experiment_module, "run_experiment",
                        lambda *a, **k: pytest.fail("the experiment ran before the check"))
    assert cli.main(["report", "--no-download", "--profile", "smoke"]) == 1
    line = one_line_error(capsys)
    assert "notebooks" in line and "--no-notebooks" in line
    assert not (tmp_path / "data").exists()


def test_evaluate_prints_the_dice_before_failing_to_save_it(trained, sample_root, tmp_path,
                                                           capsys):
    run = tmp_path / "readonly_run"
    run.mkdir()
    (run / "best.pt").write_bytes((trained / "best.pt").read_bytes())
    (run / "metrics.json").mkdir()        # a path that cannot be written as a file
    code = cli.main(["evaluate", "--checkpoint", str(run / "best.pt"), "--root",
                     str(sample_root)])
    out, err = capsys.readouterr()
    assert code == 1 and "average Dice" in out
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "metrics.json" in errors[0] and "not saved" in errors[0]



def test_evaluate_does_not_write_into_a_run_folder_another_command_is_writing(
        trained, sample_root, tmp_path, capsys):
    # evaluate beside an experiment testing the same run: one's per-image file could be left
    # beside the other's metrics.json
    run = tmp_path / "busy_run"
    run.mkdir()
    (run / "best.pt").write_bytes((trained / "best.pt").read_bytes())
    holder = hold_lock(locks.folder_lock(run))
    try:
        code = cli.main(["evaluate", "--checkpoint", str(run / "best.pt"), "--root",
                         str(sample_root)])
    finally:
        holder.kill()
        holder.wait()
    out, err = capsys.readouterr()
    assert code == 1 and "average Dice" in out
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert line == (f"error: {run} is in use by PID {holder.pid} (-c {locks.folder_lock(run)}): "
                    "the numbers above were not saved; evaluate again once it has finished")
    assert not (run / "metrics.json").exists() and not (run / "per_image_test.csv").exists()

# ---- leftovers -------------------------------------------------------------------------

def test_stale_temporaries_are_removed_when_a_run_resumes(sample_root, tmp_path):
    out = tmp_path / "run"
    train(smoke(epochs=1), sample_root, out, progress=False)
    stale = out / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(bytes(1000))
    train(smoke(epochs=2), sample_root, out, resume=True, progress=False)
    assert not stale.exists()


def test_partial_cache_folders_of_dead_builds_of_any_variant_are_removed(small_root):
    cache_root = small_root / "cache"
    dead = [cache_root / "0123456789abcdef.partial", cache_root / "fedcba9876543210.partial-x1"]
    for folder in dead:
        folder.mkdir(parents=True)
    build_cache(small_root, 32, None, progress=False, workers=1)
    assert not any(folder.exists() for folder in dead)


def test_a_partial_build_whose_builder_is_alive_is_kept(small_root):
    cache_root = small_root / "cache"
    live = cache_root / "0123456789abcdef.partial-live"
    live.mkdir(parents=True)
    holder = hold_lock(cache_root / "0123456789abcdef.lock")
    try:
        build_cache(small_root, 32, None, progress=False, workers=1)
        assert live.exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cache_build_workers_die_with_their_killed_parent(small_root, tmp_path):
    script = tmp_path / "build.py"
    # (the workers start without fork: they import this script as a module, as they would a
    # user's, and only the guarded part is the parent's; each of their rows takes 0.5 s)
    script.write_text(
        "import sys, time\n"
        "from lab2.ops import cache\n"
        "original = cache._fill_row\n"
        "def slow(job):\n"
        "    time.sleep(0.5)\n"
        "    return original(job)\n"
        "cache._fill_row = slow\n"
        "if __name__ == '__main__':\n"
        "    cache.build_cache(sys.argv[1], 32, None, progress=False, workers=2)\n",
        encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script), str(small_root)], cwd=PROJECT)
    children: list[int] = []           # its descendants: the forkserver's workers are its own
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(children) < 3:
        time.sleep(0.2)
        children = descendants_of(parent.pid)
    assert len(children) >= 3, "the build never started its workers"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in children)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_forkserver_loader_workers_die_with_their_killed_run(sample_root, tmp_path):
    # Python 3.14's default on Linux: the loader workers are children of the forkserver, which
    # lives while they do, so PyTorch's check (has my parent's PID changed?) never fired: after
    # a kill -9 of the run, its workers and the server stayed forever
    out = tmp_path / "run"
    script = ("import multiprocessing, sys\n"
              "multiprocessing.set_start_method('forkserver', force=True)\n"
              "from lab2.ops import cli\n"
              "sys.exit(cli.main(sys.argv[1:]))\n")
    run = subprocess.Popen(
        [sys.executable, "-c", script, "train", "--model", "unet", "--root", str(sample_root),
         "--out", str(out), "--profile", "smoke", "--base-channels", "4", "--num-workers", "2",
         "--epochs", "300"], cwd=PROJECT, stderr=subprocess.DEVNULL)
    started: list[int] = []            # the server, its two workers, the resource tracker
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((out / "last.pt").exists() and len(started) >= 4):
        time.sleep(0.2)
        started = descendants_of(run.pid)
    assert len(started) >= 4 and run.poll() is None, "the run never started its loader workers"
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(pid) for pid in started):
        time.sleep(0.1)
    left = [pid for pid in started if alive(pid)]
    for pid in left:                   # (so that a failure leaves nothing running)
        os.kill(pid, signal.SIGKILL)
    assert not left


# ---- files other users can read -------------------------------------------------------

def test_atomic_writes_get_the_mode_of_a_normal_write(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "x.json", "{}")
        plain = tmp_path / "plain"
        plain.write_text("{}", encoding="utf-8")
        assert (tmp_path / "x.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    finally:
        os.umask(old)


def test_cache_and_sample_folders_get_the_mode_of_a_normal_mkdir(small_root):
    cache = build_cache(small_root, 32, None, progress=False, workers=1)
    expected = atomic.folder_mode()
    assert cache.folder.stat().st_mode & 0o777 == expected
    assert (small_root / "oxford-iiit-pet").stat().st_mode & 0o777 == expected
    assert (cache.folder / "meta.json").stat().st_mode & 0o777 == atomic.file_mode()


# ---- more odd inputs --------------------------------------------------------------------------

def test_16_bit_greyscale_images_are_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 61420, 64 * 64).reshape(64, 64).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), ramp)
    rgb = read_rgb(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert rgb.max() == round(61420 / 65535 * 255) and (rgb == 255).mean() < 0.01


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF"])
def test_other_formats_pillow_reads_are_images(tmp_path, fmt):
    path = tmp_path / f"photo.{fmt.lower()}"
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path, format=fmt)
    assert check_image(path)[0] in (OK, RECOVERED)
    assert read_rgb(path).shape == (8, 8, 3)


class Foreign:                         # an object another program pickled into its .pt
    pass


@pytest.mark.parametrize("content, why", [
    ("random", "not a file written by torch.save"), ("text", "not a file written by torch.save"),
    ("empty", "the file is empty"), ("keyless", "(no model, config, epoch)"),
    ("truncated", "cut short or damaged"),
    ("object", "holds Python objects (test_faults.Foreign) besides tensors")])
def test_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(tmp_path, sample_root, content,
                                                               why, capsys):
    # PyTorch's own words were paragraphs with terminal colour codes, cut mid-sentence, and
    # advised weights_only=False: running the file's code
    path = tmp_path / f"{content}.pt"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "text":
        path.write_text("a README saved as .pt\n", encoding="utf-8")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "object":
        torch.save({"model": Foreign()}, path)
    else:
        torch.save({"weights": torch.zeros(3, 1000)}, path)
        if content == "truncated":
            path.write_bytes(path.read_bytes()[:3000])
    code = cli.main(["evaluate", "--checkpoint", str(path), "--root", str(sample_root)])
    line = one_line_error(capsys)
    assert code == 1 and str(path) in line and why in line
    assert "\x1b" not in line and "weights_only" not in line
    assert line.endswith("point --checkpoint at a run's best.pt or last.pt")


def test_the_experiment_row_comes_from_the_checkpoint(sample_root, tmp_path):
    rows, out = run_experiment("smoke", sample_root, tmp_path / "exp", progress=False,
                               runs=[("unet", False)], **TINY)
    summary = run_summary(out / "unet_raw")
    results, histories = load_results(out)
    assert results[0]["epochs"] == summary["epoch"] == 2
    assert results[0]["best_epoch"] == summary["best_epoch"]
    assert [h["epoch"] for h in histories] == [h["epoch"] for h in summary["history"]]


# ---- a real SIGKILL loop ------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_wrong_or_stuck_run(sample_root, tmp_path):
    """Kill ``train`` with SIGKILL at spread-out moments, resume each time; the finished run
    must be consistent: last.pt final, history.csv = last.pt's history, best.pt = best epoch."""
    out = tmp_path / "run"
    base = [sys.executable, "-m", "lab2", "train", "--out", str(out)]
    start = base + ["--model", "unet", "--root", str(sample_root), "--profile", "smoke",
                    "--epochs", "6", "--base-channels", "4", "--max-train-samples", "8",
                    "--max-eval-samples", "4"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        command = base + ["--resume"] if (out / "last.pt").exists() else start
        proc = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(float(rng.uniform(3.0, 9.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "last.pt").exists():
            summary = run_summary(out)
            held = [h["epoch"] for h in read_history(out / "history.csv")] \
                if (out / "history.csv").exists() else []
            assert len(held) <= summary["epoch"]        # never ahead of the weights
    command = base + ["--resume"] if (out / "last.pt").exists() else start
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = run_summary(out)
    assert summary["epoch"] == 6 and is_finished(out)
    assert [h["epoch"] for h in read_history(out / "history.csv")] == list(range(1, 7))
    assert load_checkpoint(out / "best.pt")["epoch"] == summary["best_epoch"]
    assert not list(out.glob(".*.tmp"))
