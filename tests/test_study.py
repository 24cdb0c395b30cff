"""The report's open questions: its Table 2 claims tested over training runs, and the study of its
future work (``experiment --study future-work``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lab2.ops import cli, comparisons
from lab2.ops.study import ARMS, arm_config, load_study, run_study, study_markdown
from lab2.ops.writeup import analysis_text, table2_claims


def history(model: str, preprocess: bool, seed: int, val_losses, val_dice) -> list[dict]:
    return [{"run": "x", "model": model, "preprocess": preprocess, "seed": seed, "epoch": e + 1,
             "train_loss": 1.0, "val_loss": loss, "val_dice": dice, "val_dice_pooled": dice,
             "lr": 1e-3, "seconds": 1.0}
            for e, (loss, dice) in enumerate(zip(val_losses, val_dice, strict=True))]


def three_seeds(rough: float, smooth: float) -> list[dict]:
    """UNet raw with a jumpy validation loss, with preprocessing a smooth one, three seeds."""
    rows = []
    for seed in range(3):
        jitter = 0.01 * seed
        rows += history("unet", False, seed, [1, 1 - rough - jitter, 1, 1 - rough, 1],
                        [0.2, 0.5, 0.6, 0.7, 0.8])
        rows += history("unet", True, seed, [1, 1 - smooth, 1 - 2 * smooth, 1 - 3 * smooth,
                                             1 - 4 * smooth], [0.2, 0.5, 0.6, 0.7, 0.8])
    return rows


def test_a_smoother_loss_with_preprocessing_is_confirmed_over_three_seeds():
    [claim] = table2_claims(three_seeds(rough=0.3, smooth=0.02))
    assert claim["claim"] == "preprocessing smooths the validation loss, UNet"
    assert claim["n_seeds"] == 3 and claim["high"] < 0 and claim["outcome"] == "confirmed"
    text = analysis_text([], three_seeds(0.3, 0.02))
    assert "Table 2 claims, tested over training runs" in text and "confirmed" in text


def test_one_seed_says_that_nothing_can_be_shown_and_what_would():
    rows = [h for h in three_seeds(0.3, 0.02) if h["seed"] == 0]
    [claim] = table2_claims(rows)
    assert claim["low"] is None and "`--seeds 0 1 2`" in claim["outcome"]


def test_an_undecided_claim_says_how_many_seeds_would_decide_it():
    rows = []
    for seed, (raw, pre) in enumerate([(0.10, 0.12), (0.10, 0.05), (0.10, 0.11)]):
        rows += history("unet", False, seed, [1, 1 - raw, 1, 1 - raw, 1], [0.5] * 5)
        rows += history("unet", True, seed, [1, 1 - pre, 1, 1 - pre, 1], [0.5] * 5)
    [claim] = table2_claims(rows)
    assert claim["low"] < 0 < claim["high"]
    assert f"about {claim['seeds_needed']} seeds would show" in claim["outcome"]


def test_the_comparisons_take_any_pairs_of_named_models():
    tables = {"baseline": [{"i1": {"dice": 0.5}, "i2": {"dice": 0.6}, "i3": {"dice": 0.4}}],
              "gray": [{"i1": {"dice": 0.7}, "i2": {"dice": 0.8}, "i3": {"dice": 0.6}}]}
    [row] = comparisons.compare(tables, measures={"dice": ("Dice", True)},
                                pairs=[("gray vs baseline", "baseline", "gray")], name_of=str)
    assert (row["model_a"], row["model_b"]) == ("baseline", "gray")
    assert row["mean_difference"] == pytest.approx(0.2)


def test_seeds_to_decide_pairs_seeds_and_grows_with_the_spread():
    def tables(means):       # one table per seed, two images around each seed's mean
        return [{"i1": {"dice": m - 0.01}, "i2": {"dice": m + 0.01}} for m in means]
    base = tables([0.50, 0.60, 0.70])                     # seeds differ a lot from each other
    steady = tables([0.52, 0.62, 0.72])                   # +0.02 at every seed: no spread
    noisy = tables([0.55, 0.58, 0.73])                    # +0.05, -0.02, +0.03
    assert comparisons.seeds_to_decide(base, steady, "dice") == 2
    needed = comparisons.seeds_to_decide(base, noisy, "dice")
    assert needed > 3
    d = [0.05, -0.02, 0.03]
    assert needed >= ((1.96 + 0.8416) * np.std(d, ddof=1) / np.mean(d)) ** 2
    assert comparisons.seeds_to_decide(base[:1], noisy[:1], "dice") is None


def test_seeds_do_not_decide_what_the_test_images_spread_hides():
    # +0.01 on average at every seed, but +0.31 on one image and -0.29 on the other: the
    # table's interval over the images stays wide however many seeds are trained
    def tables(shift_1, shift_2):
        return [{"i1": {"dice": 0.5 + shift_1}, "i2": {"dice": 0.5 + shift_2}} for _ in range(3)]
    base, split = tables(0.0, 0.0), tables(0.31, -0.29)
    assert comparisons.seeds_to_decide(base, split, "dice") is None
    # the same mean difference, the images agreeing: decided with few seeds
    assert comparisons.seeds_to_decide(base, tables(0.01, 0.01), "dice") == 2
    # seeds spread (+0.01, +0.02, 0.00): some seeds decide it; images that spread too need more
    def runs(diffs, image_spread):
        return [{"i1": {"dice": 0.5 + d + image_spread}, "i2": {"dice": 0.5 + d - image_spread}}
                for d in diffs]
    plain = comparisons.seeds_to_decide(base, runs((0.01, 0.02, 0.0), 0.0), "dice")
    spread = comparisons.seeds_to_decide(base, runs((0.01, 0.02, 0.0), 0.002), "dice")
    assert 2 < plain < spread


def test_the_study_table_gives_seeds_to_decide_and_labels_the_sample():
    runs = [{"arm": arm, "seed": s, "dice": 0.5, "boundary_iou": 0.3, "background_fpr": 0.1,
             "epochs": 2} for arm in ("baseline", "gray") for s in (0, 1)]
    comparison = {"comparison": "Dice: grayscale input vs the baseline", "n_images": 9,
                  "n_seeds": 2, "mean_difference": 0.01, "ci_low": -0.02, "ci_high": 0.04,
                  "p_value": 0.4, "p_holm": 0.8, "verdict": "no difference shown",
                  "seeds_needed": 17}
    facts = {"parameters": 1e6, "gflops": 1.0, "images_per_s": 10.0}
    text = study_markdown({"profile": "quick", "data": "synthetic sample", "seeds": [0, 1],
                           "arms": ["baseline", "gray"], "date": "2026-12-07",
                           "git_commit": "0123456789abcdef", "runs": runs,
                           "comparisons": [comparison],
                           "models": {"baseline": facts, "gray": facts}})
    assert "| no difference shown | 17 |" in text
    assert "Estimated on the synthetic sample" in text and "SYNTHETIC SAMPLE" in text


def test_each_arm_is_the_baseline_with_one_change():
    base = arm_config("quick", "baseline", 0)
    assert (base.model, base.preprocess, base.input) == ("resnet34_unet", True, "rgb")
    twice = arm_config("quick", "epochs_2x", 1)
    assert (twice.epochs, twice.milestones, twice.seed) == (30, (24,), 1)
    assert arm_config("quick", "levit_unet", 0).model == "levit_unet"
    assert arm_config("quick", "gray", 0).input == "gray"
    changed = {arm: {k for k, v in arm_config("quick", arm, 0).to_dict().items()
                     if v != base.to_dict()[k]} for arm in ARMS}
    assert changed == {"baseline": set(), "levit_unet": {"model"}, "gray": {"input"},
                       "edges": {"input"}, "epochs_2x": {"epochs", "milestones"}}


def test_the_study_refuses_parallel_training_in_one_line(sample_root, capsys):
    code = cli.main(["experiment", "--study", "future-work", "--root", str(sample_root),
                     "--parallel", "2"])
    assert code == 1 and "--study trains its runs one after the other" in capsys.readouterr().err


@pytest.mark.slow
def test_the_smallest_study_runs_end_to_end_and_resumes(sample_root, tmp_path):
    """Smoke profile, one seed: every arm trains, is tested and compared with the baseline; the
    same call again trains nothing."""
    import lab2.ops.experiment as experiment_module
    out = tmp_path / "study"
    results = run_study("smoke", sample_root, out, seeds=(0,), progress=False,
                        max_train_samples=8, max_eval_samples=4, epochs=1)
    assert [r["arm"] for r in results["runs"]] == list(ARMS)
    assert len(results["comparisons"]) == 3 * (len(ARMS) - 1)
    assert {c["n_seeds"] for c in results["comparisons"]} == {1}
    loaded = load_study(out)
    assert loaded["markdown"].startswith("# The report's future work, measured (synthetic sample")
    assert "SYNTHETIC SAMPLE" in loaded["markdown"] and "shows the code working" in loaded[
        "markdown"]
    assert json.loads((out / "study.json").read_text(encoding="utf-8"))["files"]["study.md"]
    trained = []
    original = experiment_module.train          # what train_and_test calls for every arm
    experiment_module.train = lambda *a, **k: trained.append(a) or original(*a, **k)
    try:
        run_study("smoke", sample_root, out, seeds=(0,), progress=False,
                  max_train_samples=8, max_eval_samples=4, epochs=1)
    finally:
        experiment_module.train = original
    assert trained == []
