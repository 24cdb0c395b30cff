"""The paired bootstrap: its interval covers the truth at the nominal rate and agrees with the
normal approximation on many images; its p-value agrees with the interval; Holm's adjustment
holds a family of comparisons to 5 %; verdicts follow the interval and the adjusted p-value."""

from __future__ import annotations

import numpy as np
import pytest

from lab2.stats import (
    Interval,
    bootstrap_difference,
    bootstrap_mean,
    holm,
    mean_and_std,
    verdict,
)

pytestmark = pytest.mark.core


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


def test_the_interval_is_reproducible():
    a, b = np.array([0.5, 0.7, 0.9]), np.array([0.6, 0.7, 1.0])
    first, second = bootstrap_difference(a, b), bootstrap_difference(a, b)
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


@pytest.mark.parametrize(("seeds", "at_least"), [(2, 0.75), (3, 0.8), (5, 0.88)])
def test_with_seeds_the_interval_covers_the_seed_to_seed_spread(seeds, at_least):
    # two networks that are equal on average; each training run (seed) moves a model's Dice on
    # every image by the same ±0.01, and each image by ±0.03 more: averaging over the seeds of
    # each model before resampling images alone gives intervals that miss 0 more often than not.
    # Deterministic: images alone 0.43, 0.36, 0.44 here; two-level 0.81, 0.87, 0.93 (resampling
    # 2, 3 or 5 values underestimates their spread, so few seeds stay under 95 %)
    rng = np.random.default_rng(5)
    repeats, images_only, two_level = 200, 0, 0
    for r in range(repeats):
        image = rng.normal(0.8, 0.1, 100)
        a, b = (image + rng.normal(0, 0.01, (seeds, 1)) + rng.normal(0, 0.03, (seeds, 100))
                for _ in range(2))
        images_only += bootstrap_mean(b.mean(axis=0) - a.mean(axis=0), n_resamples=1000,
                                      seed=r).contains(0.0)
        two_level += bootstrap_difference(a, b, n_resamples=1000, seed=r).contains(0.0)
    assert images_only / repeats < 0.6, images_only / repeats
    assert two_level / repeats >= at_least, two_level / repeats


def test_one_run_per_model_is_the_bootstrap_of_the_differences():
    rng = np.random.default_rng(6)
    a, b = rng.random(50), rng.random(50)
    assert bootstrap_difference(a, b) == bootstrap_difference([a], [b]) == bootstrap_mean(b - a)
    several = bootstrap_difference([a, a + 0.1], [b, b])
    assert several.mean == pytest.approx((b - a - 0.05).mean()) and several.n == 50
    with pytest.raises(ValueError, match="a has 50 images and b 49"):
        bootstrap_difference(a, b[1:])


def test_a_value_that_is_not_finite_is_refused_not_called_a_difference():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="1 of the values compared are not finite"):
            bootstrap_mean([0.1, bad, 0.2])
        with pytest.raises(ValueError, match="not finite"):
            bootstrap_difference([[0.5, 0.5], [0.5, 0.5]], [[0.6, bad], [0.6, 0.6]])


def test_the_p_value_is_the_one_the_interval_inverts():
    # p < 0.05 exactly when the 95 % interval excludes 0, over differences near the edge
    rng = np.random.default_rng(3)
    agree = 0
    for i, shift in enumerate(np.linspace(0.0, 0.02, 40)):
        interval = bootstrap_mean(rng.normal(shift, 0.05, 80), n_resamples=4000, seed=i)
        agree += (interval.p < 0.05) == (not interval.contains(0.0))
    assert agree >= 39                        # percentile interpolation may split one tie
    assert bootstrap_mean(np.full(20, 0.1), n_resamples=999).p == pytest.approx(2 / 1000)
    assert bootstrap_mean([-1.0, 1.0] * 50).p > 0.9
    assert bootstrap_mean([]).p != bootstrap_mean([]).p           # no images: NaN


def test_holm_adjusts_step_down_in_the_given_order():
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → kept at 0.06
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])          # capped at 1
    nan = holm([0.01, float("nan"), 0.02])                        # NaN does not count in m
    assert nan[0] == pytest.approx(0.02) and nan[2] == pytest.approx(0.02) and nan[1] != nan[1]
    assert holm([]) == []


def test_a_family_of_comparisons_of_equal_models_rarely_shows_a_difference():
    # twelve comparisons, as in results.md, of models that do not differ: each 95 % interval
    # alone calls about one table in two "different" somewhere; Holm's adjustment keeps it near
    # the 5 % it promises
    rng = np.random.default_rng(4)
    tables, raw, adjusted = 200, 0, 0                 # deterministic: 0.52 and 0.065 here
    for t in range(tables):
        intervals = [bootstrap_mean(rng.normal(0.0, 0.05, 100), n_resamples=1000, seed=t * 12 + k)
                     for k in range(12)]
        raw += any(not i.contains(0.0) for i in intervals)
        held = holm([i.p for i in intervals])
        adjusted += any(not verdict(i, "a", "b", adjusted_p=q, family=12).startswith(
            ("no difference", "not shown")) for i, q in zip(intervals, held, strict=True))
    assert raw / tables > 0.3, raw / tables
    assert adjusted / tables <= 0.1, adjusted / tables


def test_a_verdict_needs_the_adjusted_p_value_too():
    above = Interval(0.02, 0.01, 0.03, 10, p=0.004)
    assert verdict(above, "a", "b", adjusted_p=0.048, family=12) == \
        "b better: interval above 0, Holm p = 0.048 over 12 comparisons"
    assert verdict(above, "a", "b", adjusted_p=0.2, family=12) == \
        "not shown once the 12 comparisons are corrected for (Holm p = 0.200); the interval " \
        "alone is above 0"
    assert verdict(above, "a", "b", adjusted_p=0.004) == "b better: interval above 0, p = 0.004"
    # an interval containing 0 shows nothing, whatever the p-value says
    assert verdict(Interval(0.0, -0.01, 0.01, 10), "a", "b", adjusted_p=0.01,
                   family=12).startswith("no difference shown")


def test_mean_and_std_over_seeds():
    assert mean_and_std([0.8]) == (0.8, 0.0)
    mean, std = mean_and_std([0.8, 0.9])
    assert mean == pytest.approx(0.85) and std == pytest.approx(np.std([0.8, 0.9], ddof=1))


# ---- comparisons over training runs (the report's Table 2 claims) ------------------------------

def test_over_seeds_is_a_t_interval_of_the_paired_differences():
    from lab2.stats import over_seeds, t_975
    a, b = [10, 12, 11], [8, 11, 8]                       # differences -2, -1, -3
    result = over_seeds(a, b)
    half = t_975(2) * 1.0 / np.sqrt(3)                    # sd of (-2, -1, -3) is 1
    assert result["mean"] == pytest.approx(-2.0)
    assert (result["low"], result["high"]) == pytest.approx((-2 - half, -2 + half))
    assert result["n_seeds"] == 3 and t_975(2) == 4.303 and t_975(100) == 1.96


def test_the_seeds_needed_show_a_difference_of_the_size_seen_four_times_out_of_five():
    from lab2.stats import Z_POWER, over_seeds, t_975
    result = over_seeds([0.0, 0.0, 0.0], [0.1, -0.05, 0.2])   # mean 0.0833, sd 0.126
    n = result["seeds_needed"]
    sd = float(np.std([0.1, -0.05, 0.2], ddof=1))
    assert (t_975(n - 1) + Z_POWER) * sd / np.sqrt(n) <= abs(result["mean"])
    assert (t_975(n - 2) + Z_POWER) * sd / np.sqrt(n - 1) > abs(result["mean"])
    # with one seed nothing is measured, and no difference at all needs no number of seeds
    assert over_seeds([1.0], [2.0])["low"] is None
    assert over_seeds([1.0, 2.0], [1.0, 2.0])["seeds_needed"] is None


def test_the_t_interval_covers_at_about_the_nominal_rate_with_three_seeds():
    from lab2.stats import over_seeds
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(2000):
        a = rng.normal(0, 1, 3)
        b = a + 0.5 + rng.normal(0, 1, 3)                 # a true difference of 0.5
        r = over_seeds(a, b)
        covered += r["low"] <= 0.5 <= r["high"]
    assert 0.93 <= covered / 2000 <= 0.97


def test_seeds_needed_is_the_fewest_that_show_a_difference_far_below_the_spread():
    """Beyond the t table the count is solved for, not counted up to (a difference 10,000 times
    smaller than its spread needs hundreds of millions of seeds); it is still the fewest."""
    from lab2.stats import T_975, Z_POWER, seeds_needed, t_975

    def shows(n, mean, v_seeds, v_fixed):
        return (t_975(n - 1) + Z_POWER) * np.sqrt(v_fixed + v_seeds / n) <= abs(mean)

    for mean, v_seeds, v_fixed in [(1e-4, 1.0, 0.0), (-0.05, 0.9, 1e-4), (0.3, 0.5, 0.001),
                                   (0.2, 0.3, 0.0)]:
        n = seeds_needed(mean, v_seeds, v_fixed)
        assert shows(n, mean, v_seeds, v_fixed) and not shows(n - 1, mean, v_seeds, v_fixed)
        assert n > len(T_975) + 1 or all(not shows(k, mean, v_seeds, v_fixed)
                                         for k in range(2, n))
    assert seeds_needed(1e-4, 1.0) == 784_896_256
