"""Is a difference real? Paired bootstrap intervals over test images, as pure functions.

Two models are compared on the same test images: for each image, the difference of a measure
(Dice, Boundary IoU, ...) between model b and model a, each model's value first averaged over its
training seeds. The mean difference gets a 95 % percentile-bootstrap interval: test images are
resampled with replacement (the images are the sample; with one seed that is the only spread the
interval can see, so it says nothing about seed-to-seed variation), ``n_resamples`` times, from a
fixed seed so the interval is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Resamples of the paired bootstrap, and the seed that makes its interval reproducible.
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def bootstrap_mean(values, *, n_resamples: int = N_RESAMPLES, confidence: float = 0.95,
                   seed: int = BOOTSTRAP_SEED, chunk: int = 1000) -> Interval:
    """Mean of ``values`` (for a paired comparison: the per-image differences) and its
    percentile-bootstrap interval. Vectorised: ``chunk`` resamples at a time as one integer
    index array, so 10,000 resamples of 3,669 images take a fraction of a second."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        index = rng.integers(0, n, size=(size, n), dtype=np.int32 if n < 2**31 else np.int64)
        means[start:start + size] = values[index].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high), n)


def paired_difference(a: dict[str, float], b: dict[str, float], **kwargs) -> Interval:
    """Mean over the images both dicts hold of (b − a), with its bootstrap interval."""
    names = sorted(set(a) & set(b))
    return bootstrap_mean([b[name] - a[name] for name in names], **kwargs)


def verdict(interval: Interval, a: str, b: str, higher_is_better: bool = True) -> str:
    """One line saying what the interval of (b − a) shows."""
    if interval.n == 0:
        return "no images in common"
    better, worse = (b, a) if higher_is_better else (a, b)
    if interval.low > 0:
        return f"{better} better: interval above 0"
    if interval.high < 0:
        return f"{worse} better: interval below 0"
    return "no difference shown: interval contains 0"


def mean_and_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


__all__ = ["BOOTSTRAP_SEED", "Interval", "N_RESAMPLES", "bootstrap_mean", "mean_and_std",
           "paired_difference", "verdict"]
