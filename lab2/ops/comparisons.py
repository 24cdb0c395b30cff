"""The report's conclusions as paired comparisons with intervals (``comparisons.csv``).

The report concludes that preprocessing helps (+0.004 to +0.006 Dice) and that ResNet34-UNet beats
UNet (+0.04), from single runs. Here each claim is a comparison of two models on the same test
images: per image, the measure of model b minus that of model a, each model's value first averaged
over its training seeds; the mean of those differences gets a 95 % paired-bootstrap interval over
the test images and, with several seeds, over each model's seeds too (:mod:`lab2.stats`), its
bootstrap p-value, that p-value adjusted by Holm's method
over every comparison of the table (the family: a verdict holds with a family-wise error of 5 %)
and a verdict computed from the interval and the adjusted p-value. Measures: Dice (the report's),
Boundary IoU (its "smoother edges and more accurate contours") and the background false-positive
rate (its "suppresses background misclassification"; lower is better).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import run_name
from ..metrics import MEASURES
from ..stats import (
    bootstrap_difference,
    holm,
    seeds_needed,
    shows_difference,
    verdict,
)

#: (comparison, model a, model b): each a (network, preprocessing) pair; the difference is b − a.
COMPARISONS = (
    ("preprocessing vs none, UNet", ("unet", False), ("unet", True)),
    ("preprocessing vs none, ResNet34-UNet", ("resnet34_unet", False), ("resnet34_unet", True)),
    ("ResNet34-UNet vs UNet, no preprocessing", ("unet", False), ("resnet34_unet", False)),
    ("ResNet34-UNet vs UNet, with preprocessing", ("unet", True), ("resnet34_unet", True)),
)

#: The columns of ``comparisons.csv``, exactly.
COMPARISON_FIELDS = ("comparison", "model_a", "model_b", "n_images", "n_seeds",
                     "mean_difference", "ci_low", "ci_high", "p_value", "p_holm", "verdict")


def images_of_every_seed(per_seed: Sequence[dict]) -> list[str]:
    """The images every seed's per-image table holds, sorted."""
    return sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []


def seed_average(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each image's measures averaged over the seeds (images every seed has)."""
    return {name: {m: float(np.mean([p[name][m] for p in per_seed])) for m in per_seed[0][name]}
            for name in images_of_every_seed(per_seed)}


def compare(per_image: dict, reported: dict | None = None, measures: dict = MEASURES,
            pairs=COMPARISONS, name_of=None) -> list[dict]:
    """Every comparison of ``pairs`` (default :data:`COMPARISONS`) whose two models are present,
    for every measure.

    ``per_image``: model → one per-image table per seed; a model is a (network, preprocessing)
    pair, named by :func:`lab2.config.run_name`, or what ``name_of`` names. Each row has the
    columns of :data:`COMPARISON_FIELDS` plus ``measure`` and, for Dice, ``reported_difference``
    (the report's claim; None for the other measures). ``p_holm`` and ``verdict`` treat the rows
    returned as one family (:func:`lab2.stats.holm`)."""
    name_of = name_of or (lambda key: run_name(*key))
    common = {key: images_of_every_seed(tables) for key, tables in per_image.items() if tables}
    rows, intervals = [], []
    for measure, (label, higher_is_better) in measures.items():
        for title, a, b in pairs:
            if a not in common or b not in common:
                continue
            names = sorted(set(common[a]) & set(common[b]))
            if not names or measure not in per_image[a][0][names[0]]:
                continue
            interval = bootstrap_difference(*([[table[n][measure] for n in names]
                                                for table in per_image[key]] for key in (a, b)))
            name_a, name_b = name_of(a), name_of(b)
            rows.append({
                "comparison": f"{label}: {title}", "model_a": name_a, "model_b": name_b,
                "n_images": interval.n, "n_seeds": min(len(per_image[a]), len(per_image[b])),
                "mean_difference": interval.mean, "ci_low": interval.low,
                "ci_high": interval.high, "p_value": interval.p, "measure": measure,
                "reported_difference": (reported[b] - reported[a]
                                        if reported is not None and measure == "dice" else None),
            })
            intervals.append((interval, higher_is_better))
    for row, adjusted, (interval, higher_is_better) in zip(
            rows, holm([row["p_value"] for row in rows]), intervals, strict=True):
        row["p_holm"] = adjusted
        row["verdict"] = verdict(interval, row["model_a"], row["model_b"], higher_is_better,
                                 adjusted, len(rows))
    return rows


def seeds_to_decide(per_seed_a: Sequence[dict], per_seed_b: Sequence[dict], measure: str
                    ) -> int | None:
    """About how many seeds (training runs of each model) would show a difference in
    ``measure`` of the size seen, four times out of five, on the same test images
    (:func:`lab2.stats.seeds_needed`), where v_seeds is the variance over seeds of each seed's
    mean difference (seed k of a paired with seed k of b) and v_images the variance of the
    per-image differences (averaged over the seeds) over the number of images — the part of the
    table's interval that more seeds do not shrink.

    None with one seed, with no difference seen, or when the images' part alone is wider than
    the difference: then no number of seeds decides it, only more test images. From a few
    seeds this is a rough estimate; on other data both the difference and the spreads differ."""
    pairs = list(zip(per_seed_a, per_seed_b, strict=False))
    names = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs))) if pairs else []
    if len(pairs) < 2 or not names:
        return None
    d = np.array([[b[n][measure] - a[n][measure] for n in names] for a, b in pairs])
    v_seeds = float(d.mean(axis=1).var(ddof=1))             # (seeds,): the runs' own spread
    v_images = float(d.mean(axis=0).var(ddof=1)) / len(names) if len(names) > 1 else 0.0
    return seeds_needed(float(d.mean()), v_seeds, v_images)


#: What a comparison says of the report's claimed difference (:func:`claim_outcome`): a count's
#: words, and the sentence for one claim.
CLAIM_OUTCOMES = {
    "confirmed": ("confirmed", "confirmed: a difference of the claim's sign is shown"),
    "contradicted": ("contradicted", "contradicted: a difference of the opposite sign is shown"),
    "excluded": ("with the claimed size outside the interval",
                 "no difference shown, and the claimed size lies outside the 95 % interval"),
    "undecided": ("undecided", "cannot tell: the interval holds both 0 and the claim"),
}


def claim_outcome(row: dict) -> str | None:
    """What a comparison row (:func:`compare`) says of the report's claimed difference, a key of
    :data:`CLAIM_OUTCOMES`; None for a row without a claim. "Shown" is the verdict's
    (:func:`lab2.stats.shows_difference`); a difference that is not shown is not shown to be 0
    either, so a claim inside the interval stays undecided."""
    claim = row.get("reported_difference")
    if claim is None:
        return None
    if shows_difference(row["ci_low"], row["ci_high"], row["p_holm"]):
        return "confirmed" if (row["mean_difference"] > 0) == (claim > 0) else "contradicted"
    return "undecided" if row["ci_low"] <= claim <= row["ci_high"] else "excluded"


__all__ = ["CLAIM_OUTCOMES", "COMPARISONS", "COMPARISON_FIELDS", "MEASURES", "claim_outcome",
           "compare", "images_of_every_seed", "seed_average", "seeds_to_decide"]
