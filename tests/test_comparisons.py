"""Seeds, Table 1 averaged over them, paired comparisons, typical images, Dice by breed."""

from __future__ import annotations

import csv
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
from interrupts import start_until

from lab2.config import RECIPE_FIELDS, profile_config, run_name
from lab2.ops import cli
from lab2.ops.comparisons import COMPARISON_FIELDS, MEASURES, claim_outcome, compare, seed_average
from lab2.ops.experiment import (
    load_experiment,
    load_results,
    run_experiment,
    table_rows,
    training_differences,
)
from lab2.ops.runs import trained_with
from lab2.ops.writeup import analysis_text
from lab2.report.analysis import dice_by_group, typical_images
from lab2.report.figures import plot_comparisons, plot_dice_table

TINY = dict(epochs=1, base_channels=4, max_train_samples=8, max_eval_samples=6, num_workers=0,
            device="cpu")


def test_seed_zero_keeps_todays_folder_name():
    assert run_name("unet", False) == run_name("unet", False, 0) == "unet_raw"
    assert run_name("resnet34_unet", True, 2) == "resnet34_unet_preprocessed_seed2"


def test_each_image_is_averaged_over_seeds_before_the_difference():
    seed0 = {"x": {"dice": 0.6}, "y": {"dice": 0.8}}
    seed1 = {"x": {"dice": 0.8}, "y": {"dice": 1.0}, "z": {"dice": 0.0}}   # z: one seed only
    assert seed_average([seed0, seed1]) == {"x": {"dice": 0.7}, "y": {"dice": 0.9}}
    a = [{"x": {"dice": 0.5}, "y": {"dice": 0.5}}]
    rows = compare({("unet", False): a, ("unet", True): [seed0, seed1]},
                   reported={("unet", False): 0.8887, ("unet", True): 0.8945},
                   measures={"dice": ("Dice", True)})
    assert len(rows) == 1 and set(COMPARISON_FIELDS) <= set(rows[0])
    row = rows[0]
    assert row["comparison"] == "Dice: preprocessing vs none, UNet"
    assert (row["model_a"], row["model_b"], row["n_images"], row["n_seeds"]) == \
        ("unet_raw", "unet_preprocessed", 2, 1)
    assert row["mean_difference"] == pytest.approx(((0.7 - 0.5) + (0.9 - 0.5)) / 2)
    assert row["reported_difference"] == pytest.approx(0.0058)
    assert row["p_value"] == row["p_holm"] == pytest.approx(2 / 10_001)   # every resample > 0
    assert row["verdict"] == "unet_preprocessed better: interval above 0, p = 0.0002"


def test_the_comparisons_of_a_table_are_held_to_five_percent_together():
    # preprocessing moves UNet by +0.01 ± 0.03 over 40 images: alone, a 95 % interval above 0
    # (p ≈ 0.04); among the table's four comparisons, Holm's adjustment does not let it through
    raw = {f"img{i}": {"dice": 0.8} for i in range(40)}
    moved = {f"img{i}": {"dice": 0.8 + (0.04 if i % 2 else -0.02)} for i in range(40)}
    rows = compare({("unet", False): [raw], ("unet", True): [moved],
                    ("resnet34_unet", False): [raw], ("resnet34_unet", True): [raw]},
                   measures={"dice": ("Dice", True)})
    assert len(rows) == 4
    unet = rows[0]
    assert unet["ci_low"] > 0 and unet["p_value"] < 0.05
    assert unet["p_holm"] == pytest.approx(min(1.0, 4 * unet["p_value"]), rel=0.2)
    assert unet["verdict"].startswith("not shown once the 4 comparisons are corrected for")
    assert [r["verdict"] for r in rows[1:3]] == ["no difference shown: interval contains 0"] * 2


def test_with_seeds_a_difference_that_one_training_run_makes_is_not_shown():
    # preprocessing's three runs differ from the raw runs by +0.04, -0.01 and +0.015 on every
    # image: the average difference (+0.015) is the same on each image, so intervals over images
    # alone would call it certain; one run in three is below the raw runs, so it is not shown
    raw = {f"img{i}": {"dice": 0.7 + 0.002 * i} for i in range(30)}
    runs = [{n: {"dice": v["dice"] + shift} for n, v in raw.items()} for shift in (0.04, -0.01,
                                                                                   0.015)]
    (row,) = compare({("unet", False): [raw, raw, raw], ("unet", True): runs},
                     measures={"dice": ("Dice", True)})
    assert row["n_seeds"] == 3 and row["mean_difference"] == pytest.approx(0.015)
    assert row["ci_low"] < 0 < row["ci_high"] and row["p_value"] > 0.2
    assert row["verdict"] == "no difference shown: interval contains 0"


def test_the_comparisons_figure_fills_only_the_differences_the_verdicts_show():
    def table(shift):
        return {f"img{i}": {"dice": 0.8 + shift + (0.01 if i % 2 else -0.01),
                            "boundary_iou": 0.5 + (0.02 if i % 3 else -0.01)} for i in range(40)}
    rows = compare({("unet", False): [table(0.0)], ("unet", True): [table(0.05)],
                    ("resnet34_unet", False): [table(0.0)], ("resnet34_unet", True): [table(0.0)]},
                   reported={("unet", False): 0.8887, ("unet", True): 0.8945,
                             ("resnet34_unet", False): 0.9319, ("resnet34_unet", True): 0.9359},
                   measures={m: MEASURES[m] for m in ("dice", "boundary_iou")})
    figure = plot_comparisons(rows, "synthetic sample", "smoke")
    dice, boundary = figure.axes
    assert [t.get_text() for t in dice.get_yticklabels()][:2] == [
        "UNet + preprocessing\n− UNet", "ResNet34-UNet + preprocessing\n− ResNet34-UNet"]
    filled = [line.get_markerfacecolor() == "black" for line in dice.lines
              if line.get_marker() == "o"]
    # preprocessed UNet is above raw UNet and above preprocessed ResNet34-UNet, nothing else
    assert filled == [r["verdict"].startswith("unet_preprocessed better") for r in rows[:4]] == \
        [True, False, False, True]
    crosses = [line.get_xdata()[0] for line in dice.lines if line.get_marker() == "x"]
    assert crosses == pytest.approx([r["reported_difference"] for r in rows[:4]])
    assert not [line for line in boundary.lines if line.get_marker() == "x"]
    assert "Holm's correction for the 8 comparisons" in figure._suptitle.get_text()
    assert any("NOT Oxford-IIIT Pet" in t.get_text() for t in figure.texts)
    plt.close(figure)
    empty = plot_comparisons([], "synthetic sample", "smoke")
    assert empty.axes[0].texts[0].get_text() == "no two models to compare yet"
    plt.close(empty)


def test_what_a_comparison_says_of_the_reports_claim():
    def row(low, high, p_holm=0.001, claim=0.04):
        return {"mean_difference": (low + high) / 2, "ci_low": low, "ci_high": high,
                "p_holm": p_holm, "reported_difference": claim}
    assert claim_outcome(row(0.01, 0.03)) == "confirmed"
    assert claim_outcome(row(-0.03, -0.01)) == "contradicted"
    assert claim_outcome(row(0.01, 0.03, p_holm=0.2)) == "excluded"     # not shown after Holm
    assert claim_outcome(row(-0.02, 0.02)) == "excluded"                # 0.04 outside
    assert claim_outcome(row(-0.02, 0.05)) == "undecided"               # 0 and 0.04 inside
    assert claim_outcome(row(-0.02, 0.05, claim=None)) is None


def test_the_analysis_answers_the_reports_claims_first():
    raw = {f"img{i}": {"dice": 0.8 + (0.01 if i % 2 else -0.01)} for i in range(40)}
    better = {n: {"dice": v["dice"] + 0.05} for n, v in raw.items()}
    rows = compare({("unet", False): [raw], ("unet", True): [better],
                    ("resnet34_unet", False): [raw], ("resnet34_unet", True): [raw]},
                   reported={("unet", False): 0.8887, ("unet", True): 0.8945,
                             ("resnet34_unet", False): 0.9319, ("resnet34_unet", True): 0.9359},
                   measures={"dice": ("Dice", True)})
    results = [{"data": "synthetic sample"}]
    history = [{"run": "unet_raw", "model": "unet", "preprocess": False, "seed": 0, "epoch": 1,
                "val_dice": 0.5, "val_loss": 0.3}]
    lines = analysis_text(results, history, rows).splitlines()
    assert lines[0] == (
        "- **The report's 4 Dice claims, tested here** (on the synthetic sample: this says "
        "nothing about Oxford-IIIT Pet), b − a with its 95 % interval over 40 test images and 1 "
        "seed(s): 1 confirmed, 1 contradicted, 2 with the claimed size outside the interval.")
    assert lines[1].startswith("  - preprocessing vs none, UNet: the report +0.0058, here "
                               "+0.0500 [") and lines[1].endswith("— confirmed: a difference of "
                                                                  "the claim's sign is shown.")
    assert not any(line.startswith("- **Dice:") for line in lines)    # not said twice
    assert lines[-1] == ("- **Convergence** (one training run each, so no spread is measured: "
                         "`--seeds 0 1 2` measures it; the report: ResNet34-UNet converges "
                         "faster): epochs to reach 95 % of the best validation Dice — unet_raw 1.")


def test_convergence_and_roughness_are_given_over_every_seed():
    def curve(run, seed, losses, dice):
        return [{"run": run, "model": "unet", "preprocess": "preprocessed" in run, "seed": seed,
                 "epoch": e + 1, "val_loss": loss, "val_dice": d}
                for e, (loss, d) in enumerate(zip(losses, dice, strict=True))]
    histories = (curve("unet_raw", 0, [0.5, 0.3, 0.4, 0.2], [0.2, 0.5, 0.6, 0.9])
                 + curve("unet_raw_seed1", 1, [0.5, 0.4, 0.3, 0.2], [0.2, 0.95, 0.9, 0.95])
                 + curve("unet_preprocessed", 0, [0.5, 0.4, 0.3, 0.2], [0.2, 0.4, 0.9, 0.9]))
    convergence, rough, table2, smoother = analysis_text([], histories).splitlines()
    # seed 0 reaches 95 % of its best at epoch 4, seed 1 at epoch 2; one seed of preprocessed
    assert convergence.startswith("- **Convergence** (mean ± sd over 2 seeds;")
    assert convergence.endswith(f"unet_raw 3.0 ± {np.std([4, 2], ddof=1):.1f}, "
                                "unet_preprocessed 3.")
    # roughness: seed 0 (0.2 + 0.1 + 0.2) / 3, seed 1 0.1
    assert rough.endswith(f"unet_raw {np.mean([0.5 / 3, 0.1]):.4f} ± "
                          f"{np.std([0.5 / 3, 0.1], ddof=1):.4f}, unet_preprocessed 0.1000.")
    # Table 2's claim pairs seed 0 with seed 0 only: 0.1 − 0.5 / 3, with no interval from one seed
    assert table2.startswith("- **The report's Table 2 claims")
    assert f"{0.1 - 0.5 / 3:+.4g} over 1 seed(s)" in smoother
    assert "nothing can be shown" in smoother


def test_table_1_is_the_mean_and_spread_over_seeds():
    runs = [{"model": "unet", "preprocess": False, "seed": s, "dice": d, "dice_pooled": d,
             "dice_per_batch": d, "dice_original": d, "dice_pooled_original": d,
             "boundary_iou": 0.5, "background_fpr": 0.1, "reported_dice": 0.8887, "n_test": 9,
             "epochs": 2, "best_epoch": 2, "best_val_dice": 0.7, "dropout_kind": "channel",
             "image_size": 64, "profile": "smoke",
             "data": "synthetic sample"} for s, d in ((0, 0.6), (1, 0.8))]
    (row,) = table_rows(runs)
    assert row["dice"] == pytest.approx(0.7) and row["n_seeds"] == 2
    assert row["dice_std"] == pytest.approx(0.1414213562)          # sample standard deviation
    assert row["boundary_iou_std"] == 0.0 and row["seeds"] == [0, 1]


def _summary(config: dict, epochs: int, *changes: tuple, precision: str | None = "fp32"
             ) -> dict:
    """A run_summary of a run trained ``epochs`` epochs, with (epoch, field, from, to) changes."""
    return {"config": config, "epoch": epochs, "precision": precision,
            "changes": [dict(zip(("epoch", "field", "from", "to"), c, strict=True))
                        for c in changes]}


def test_how_a_run_was_trained_names_each_value_with_its_epochs():
    config = profile_config("smoke", lr=0.01, batch_size=2, epochs=6).to_dict()
    plain = trained_with(_summary(config, 6))
    assert set(plain) == {*RECIPE_FIELDS, "precision"} and plain["lr"] == "0.01"
    assert plain["precision"] == "fp32"
    assert trained_with(_summary(config, 6, precision=None))["precision"] == "not recorded"
    assert plain["max_eval_samples"] == "8" and plain["milestones"] == "30"
    for machine in ("num_workers", "device", "amp", "seed", "model", "profile"):
        assert machine not in plain       # how or which run, not how it learns
    words = trained_with(_summary(
        config, 6,
        (2, "epochs", 2, 4), (2, "lr", 0.001, 0.005),   # epochs 3-4 at 0.005
        (4, "epochs", 4, 6), (4, "lr", 0.005, 0.02),    # a change with no epoch trained at 0.02
        (4, "lr", 0.02, 0.01), (4, "num_workers", 0, 2),
        (5, "batch_size", 4, 2), (5, "amp", "off", "bf16"), (5, "precision", "fp32", "bf16"),
        precision="bf16"))
    assert words["epochs"] == "6"         # extending a run changes none of its earlier epochs
    assert words["lr"] == "0.001 (epochs 1–2), 0.005 (epochs 3–4), 0.01 (epochs 5–6)"
    assert words["batch_size"] == "4 (epochs 1–5), 2 (epoch 6)"
    assert words["precision"] == "fp32 (epochs 1–5), bf16 (epoch 6)"   # resumed elsewhere
    assert trained_with(_summary(config, 6, (3, "lr", 0.01, 0.02), (3, "lr", 0.02, 0.01)))[
        "lr"] == "0.01"                   # changed back before an epoch was trained with it


def test_the_settings_runs_differ_in_are_named_with_their_runs():
    config = profile_config("smoke").to_dict()
    alike = [{"run": name, "trained_with": trained_with(_summary(config, 2))}
             for name in ("unet_raw", "unet_preprocessed", "resnet34_unet_raw")]
    assert training_differences(alike) == {}
    alike[2]["trained_with"] = trained_with(_summary(config, 3, (2, "lr", 0.001, 0.01)))
    assert training_differences(alike) == {
        "epochs": "epochs: 2 in unet_raw, unet_preprocessed; 3 in resnet34_unet_raw",
        "lr": "lr: 0.001 in unet_raw, unet_preprocessed; 0.001 (epochs 1–2), 0.01 (epoch 3) "
              "in resnet34_unet_raw"}


def test_typical_images_are_the_ones_closest_to_the_median():
    # binary fractions, so that equal distances are exactly equal
    values = {"a": 0.125, "b": 0.5, "c": 0.75, "d": 1.0, "e": 0.625}
    per_image = {"unet_raw": values, "resnet34_unet_raw": {k: v - 0.25 for k, v in values.items()}}
    # means 0, 0.375, 0.625, 0.875, 0.5: median 0.5 (e); b and c are 0.125 from it, tie by name
    assert typical_images(per_image, 3) == ["e", "b", "c"]
    # without e the median is still 0.5: b, c, then d (0.375 away; a is 0.5 away)
    assert typical_images(per_image, 3, exclude=["e"]) == ["b", "c", "d"]


def test_dice_by_breed_and_species():
    per_image = {"unet_raw": {"Abyssinian_1": 0.9, "Abyssinian_2": 0.7, "beagle_1": 0.2}}
    by_species = dice_by_group(per_image, "species", n_resamples=200)
    assert [(r["group"], r["n_images"]) for r in by_species] == [("dog", 1), ("cat", 2)]
    assert by_species[1]["dice"] == pytest.approx(0.8)
    assert by_species[1]["ci_low"] >= 0.7 - 1e-12 and by_species[1]["ci_high"] <= 0.9 + 1e-12
    by_breed = dice_by_group(per_image, "breed", n_resamples=200)
    assert [r["group"] for r in by_breed] == ["beagle", "Abyssinian"]   # hardest first


def test_experiment_refuses_seed_and_seeds_together(capsys):
    assert cli.main(["experiment", "--profile", "smoke", "--seed", "1", "--seeds", "0", "1"]) == 1
    assert "--seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_an_experiment_with_two_seeds_writes_eight_runs_and_the_comparisons(sample_root,
                                                                            tmp_path):
    out = tmp_path / "exp"
    table, _ = run_experiment("smoke", sample_root, out, progress=False, seeds=(0, 1), **TINY)
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == sorted(run_name(m, p, s) for m in ("unet", "resnet34_unet")
                           for p in (False, True) for s in (0, 1))
    assert all(r["n_seeds"] == 2 for r in table) and len(table) == 4
    with open(out / "comparisons.csv", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == (*COMPARISON_FIELDS, "profile", "data")
        rows = list(reader)
    assert len(rows) == 12 and {r["n_seeds"] for r in rows} == {"2"}   # 4 comparisons × 3
    assert {(r["profile"], r["data"]) for r in rows} == {("smoke", "synthetic sample")}
    with open(out / "histories.csv", encoding="utf-8") as f:
        assert {(r["profile"], r["data"]) for r in csv.DictReader(f)} == {
            ("smoke", "synthetic sample")}
    results = load_experiment(out)
    assert results["seeds"] == [0, 1] and len(results["runs"]) == 8
    assert isinstance(results["table"][0]["dice"], float)              # typed, not parsed
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "± " in markdown and "interval over test images and seeds" in markdown
    first = json.loads((out / "results.json").read_text(encoding="utf-8"))
    # a second call trains nothing: every run is finished and its metrics are reused
    stamps = {p: (p / "last.pt").stat().st_mtime_ns for p in out.iterdir() if p.is_dir()}
    run_experiment("smoke", sample_root, out, progress=False, seeds=(0, 1), **TINY)
    assert stamps == {p: (p / "last.pt").stat().st_mtime_ns for p in stamps}
    assert load_results(out)[0] == first["table"]


@pytest.mark.slow
def test_a_parallel_experiment_trains_the_four_runs_in_two_processes(sample_root, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "exp"
    assert cli.main(["experiment", "--root", str(sample_root), "--out", str(out), "--profile",
                     "smoke", "--parallel", "2", "--epochs", "1", "--base-channels", "4",
                     "--max-train-samples", "8", "--max-eval-samples", "4", "--device", "cpu"]) == 0
    table, histories = load_results(out)
    assert [(r["model"], r["preprocess"]) for r in table] == [
        ("unet", False), ("unet", True), ("resnet34_unet", False), ("resnet34_unet", True)]
    assert all(r["epochs"] == 1 for r in table) and len(histories) == 4
    # every run was trained by a worker: the parent, run again, trains nothing
    import lab2.ops.experiment as experiment_module
    monkeypatch.setattr(experiment_module, "train",
                        lambda *a, **k: pytest.fail("a finished run was trained again"))
    run_experiment("smoke", sample_root, out, progress=False, parallel=2, epochs=1,
                   base_channels=4, max_train_samples=8, max_eval_samples=4, device="cpu")


def test_table_1_says_when_its_runs_were_not_trained_alike(sample_root, tmp_path, caplog,
                                                          monkeypatch):
    """A run resumed on its own with another learning rate (or a later command's --lr that the
    finished runs never saw) must not sit silently beside the others in one table."""
    two = (("unet", False), ("unet", True))
    out = tmp_path / "exp"
    run_experiment("smoke", sample_root, out, progress=False, runs=two, amp="off", **TINY)
    results = load_experiment(out)
    assert results["differences"] == {} and {r["precision"] for r in results["table"]} == {"fp32"}
    assert "NOT TRAINED ALIKE" not in (out / "results.md").read_text(encoding="utf-8")
    # unet_raw alone trained on for an epoch with another learning rate, in bf16 (as if resumed
    # on a machine whose --amp auto picks it)
    from lab2.ops.runs import saved_config
    from lab2.ops.trainer import train
    train(saved_config(out / "unet_raw").replace(epochs=2, lr=0.01, amp="bf16"), sample_root,
          out / "unet_raw", resume=True, progress=False)
    import lab2.ops.experiment as experiment_module
    monkeypatch.setattr(experiment_module, "train",
                        lambda *a, **k: pytest.fail("a finished run was trained again"))
    with caplog.at_level("WARNING", logger="lab2.ops.experiment"):
        run_experiment("smoke", sample_root, out, progress=False, runs=two, lr=0.05, **TINY)
    assert ("unet_preprocessed is finished: not applied to it: lr 0.05 (it was trained with "
            "0.001)") in caplog.text
    assert "unet_raw is finished: not applied to it: lr 0.05 (it was trained with 0.01), " \
           "epochs 1 (it has trained 2)" in caplog.text
    assert "were not all trained the same way" in caplog.text
    expected = ["epochs: 2 in unet_raw; 1 in unet_preprocessed",
                "lr: 0.001 (epoch 1), 0.01 (epoch 2) in unet_raw; 0.001 in unet_preprocessed",
                "precision: fp32 (epoch 1), bf16 (epoch 2) in unet_raw; fp32 in "
                "unet_preprocessed"]
    results = load_experiment(out)
    assert list(results["differences"].values()) == expected
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "**NOT TRAINED ALIKE**" in table and all(f"- {line}" in table for line in expected)
    figure = plot_dice_table(results["table"], results["data"], "smoke", results["differences"])
    assert "NOT TRAINED ALIKE: the runs differ in epochs, lr, precision" in [
        t.get_text() for t in figure.texts]
    plt.close(figure)
    text = analysis_text(results["table"], results["histories"], results["comparisons"],
                         results["differences"])
    assert text.startswith("- **Not trained alike:** the runs differ in epochs, lr, precision ")
    assert "| 2 | channel | fp32 (epoch 1), bf16 (epoch 2) |" in table


def test_gpu_lists_are_checked_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["experiment", "--gpus", "0,0"])
    assert exit_info.value.code == 2 and "distinct GPU numbers" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_stops_a_parallel_experiment_cleanly_and_it_resumes(sample_root, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "exp"
    command = [sys.executable, "-m", "lab2", "experiment", "--root", str(sample_root), "--out",
               str(out), "--profile", "smoke", "--parallel", "2", "--epochs", "3",
               "--base-channels", "4", "--max-train-samples", "8", "--max-eval-samples", "4",
               "--device", "cpu"]
    # a terminal's Ctrl-C reaches the whole process group: the parent and its workers
    proc = start_until(command, lambda: any((out / run / "last.pt").exists()
                                            for run in ("unet_raw", "unet_preprocessed")))
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted; run the same command again to continue"
    assert "Traceback" not in err
    def alive_in_group() -> list[str]:       # zombies are already dead, waiting to be reaped
        ps = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(proc.pid)],
                            capture_output=True, text=True).stdout.split("\n")
        return [line for line in ps if line.strip() and "Z" not in line.split()[1]]
    deadline = time.monotonic() + 10
    while alive_in_group() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive_in_group() == [], "worker processes outlived the interrupted experiment"
    # the same command finishes the job from what was saved
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table, _ = load_results(out)
    assert all(r["epochs"] == 3 for r in table)


def test_gpus_are_checked_against_the_machine_before_any_process_starts(sample_root, tmp_path,
                                                                        monkeypatch, capsys):
    import torch
    command = ["experiment", "--root", str(sample_root), "--out", str(tmp_path / "exp"),
               "--profile", "smoke"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main([*command, "--gpus", "0"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --gpus 0: no CUDA device here; --parallel N trains N runs at once on the CPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cli.main([*command, "--gpus", "0,3"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --gpus 0,3: this machine has 2 GPU(s), numbered 0 to 1 (after "
        "CUDA_VISIBLE_DEVICES)")
    assert not list((tmp_path / "exp").glob("*/last.pt"))


def test_a_run_process_that_dies_without_a_word_is_reported_not_a_crash():
    # the system's out-of-memory killer sends SIGKILL: the process reports nothing, and reading
    # its closed pipe raised EOFError in the parent, a traceback that ended the whole experiment
    import multiprocessing
    import signal

    from lab2.ops.experiment import _outcome
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=signal.raise_signal, args=(signal.SIGKILL,))
    process.start()
    send.close()
    process.join()
    assert _outcome(process, receive) == (
        "the process was killed by SIGKILL (the system's out-of-memory killer does this when "
        "memory runs out: try fewer --parallel processes)")



def test_the_epochs_a_run_has_trained_are_read_from_its_history(tmp_path):
    from lab2.ops.experiment import _epochs_trained
    from lab2.ops.runs import write_history
    assert _epochs_trained(tmp_path) == 0                                  # not started
    row = dict(train_loss=0.5, val_loss=0.4, val_dice=0.7, val_dice_pooled=0.7, lr=1e-3,
               seconds=1.0)
    write_history(tmp_path / "history.csv", [{"epoch": e, **row} for e in (1, 2, 3)])
    assert _epochs_trained(tmp_path) == 3


@pytest.mark.slow
def test_a_parallel_run_that_is_exiting_ignores_the_parents_terminate(tmp_path):
    # Ctrl-C just as a run ends: the parent terminates a child that is already running its exit
    # handlers; the child's SIGTERM handler (SystemExit) printed "Exception ignored in atexit
    # callback ... Traceback" there. The exact instant: an exit handler that waits for the signal.
    import signal
    import subprocess
    import sys
    child = f"""
import multiprocessing, time, weakref
import lab2.ops.experiment as experiment
from lab2.config import profile_config
class Box: pass
box = Box()
def exiting():
    print("exiting", flush=True)
    time.sleep(2)
weakref.finalize(box, exiting)
experiment.train = lambda *args, **kwargs: None
receive, send = multiprocessing.Pipe(duplex=False)
experiment._train_run(profile_config("smoke").to_dict(), ".", {str(tmp_path)!r}, False, None, 1,
                      send)
assert receive.recv() is None
"""
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline().startswith("exiting")
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0 and "Traceback" not in err, err
