"""The paired bootstrap: its interval covers the truth at the nominal rate and agrees with the
normal approximation on many images; verdicts follow the interval."""

from __future__ import annotations

import numpy as np
import pytest

from lab2.stats import Interval, bootstrap_mean, mean_and_std, paired_difference, verdict


def test_the_interval_covers_a_known_difference_at_about_the_nominal_rate():
    # synthetic per-image Dice of two models with a true mean difference of 0.01
    rng = np.random.default_rng(1)
    true_difference, repeats, covered = 0.01, 300, 0
    for i in range(repeats):
        a = np.clip(rng.normal(0.85, 0.08, 400), 0, 1)
        b = np.clip(a + true_difference + rng.normal(0, 0.03, 400), -1, 2)
        interval = bootstrap_mean(b - a, n_resamples=2000, seed=i)
        covered += interval.contains(true_difference)
    # 95 % nominal; 300 repeats give a binomial standard error of 1.3 points
    assert 0.91 <= covered / repeats <= 0.985, covered / repeats


def test_on_many_images_it_matches_the_normal_approximation():
    rng = np.random.default_rng(2)
    differences = rng.normal(0.004, 0.05, 3669)
    interval = bootstrap_mean(differences)
    half = 1.96 * differences.std(ddof=1) / np.sqrt(len(differences))
    assert interval.mean == pytest.approx(differences.mean())
    assert interval.low == pytest.approx(differences.mean() - half, abs=0.1 * half)
    assert interval.high == pytest.approx(differences.mean() + half, abs=0.1 * half)


def test_the_interval_is_reproducible_and_paired_by_name():
    a = {"x": 0.5, "y": 0.7, "z": 0.9, "only_a": 0.0}
    b = {"x": 0.6, "y": 0.7, "z": 1.0, "only_b": 1.0}
    first, second = paired_difference(a, b), paired_difference(a, b)
    assert first == second and first.n == 3
    assert first.mean == pytest.approx((0.1 + 0.0 + 0.1) / 3)
    assert 0.0 <= first.low <= first.mean <= first.high <= 0.1 + 1e-12


def test_verdicts_follow_the_interval():
    assert verdict(Interval(0.02, 0.01, 0.03, 10), "UNet", "ResNet34-UNet") == \
        "ResNet34-UNet better: interval above 0"
    assert verdict(Interval(-0.02, -0.03, -0.01, 10), "UNet", "ResNet34-UNet") == \
        "UNet better: interval below 0"
    assert verdict(Interval(0.0, -0.01, 0.01, 10), "a", "b").startswith("no difference shown")
    # for a rate of errors, lower is better
    assert verdict(Interval(0.02, 0.01, 0.03, 10), "a", "b", higher_is_better=False) == \
        "a better: interval above 0"


def test_mean_and_std_over_seeds():
    assert mean_and_std([0.8]) == (0.8, 0.0)
    mean, std = mean_and_std([0.8, 0.9])
    assert mean == pytest.approx(0.85) and std == pytest.approx(np.std([0.8, 0.9], ddof=1))
