"""A look at an experiment's test images: the hardest and the typical ones, the four runs'
predictions for the Table 3 grid, and Dice by species and breed with intervals (the per-image
measures and the trained models come from the experiment folder:
:func:`lab2.ops.notebook.per_image_dice`, :func:`lab2.ops.notebook.load_models`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.index import breed_of, species_of
from ..data.reading import read_example
from ..metrics import image_dice
from ..predict import predict_mask
from ..stats import bootstrap_mean


def _mean_over_runs(per_image: dict[str, dict[str, float]]) -> dict[str, float]:
    names = set.intersection(*(set(d) for d in per_image.values()))
    return {name: float(np.mean([d[name] for d in per_image.values()])) for name in names}


def hardest_images(per_image: dict[str, dict[str, float]], n: int) -> list[str]:
    """The ``n`` images with the lowest Dice averaged over the runs."""
    mean = _mean_over_runs(per_image)
    return sorted(mean, key=lambda name: (mean[name], name))[:n]


def typical_images(per_image: dict[str, dict[str, float]], n: int,
                   exclude: Sequence[str] = ()) -> list[str]:
    """The ``n`` images whose Dice averaged over the runs is closest to the median of those
    averages (ties by name), leaving out ``exclude`` (e.g. the hardest ones)."""
    mean = {k: v for k, v in _mean_over_runs(per_image).items() if k not in set(exclude)}
    median = float(np.median(list(mean.values())))
    return sorted(mean, key=lambda name: (abs(mean[name] - median), name))[:n]


def species_name(breed: str) -> str:
    return "cat" if species_of(breed) == 1 else "dog"


def dice_by_group(per_image: dict[str, dict[str, float]], by: str = "breed",
                  n_resamples: int = 2000) -> list[dict]:
    """Mean Dice per run and per species (``by="species"``) or breed, with a 95 % bootstrap
    interval over the group's images; sorted by the group's Dice averaged over the runs."""
    def group_of(name: str) -> str:
        breed = breed_of(name)
        return species_name(breed) if by == "species" else breed
    rows = []
    for run, values in per_image.items():
        groups: dict[str, list[float]] = {}
        for name, value in values.items():
            groups.setdefault(group_of(name), []).append(value)
        for group, dice in groups.items():
            interval = bootstrap_mean(dice, n_resamples=n_resamples)
            rows.append({"group": group, "run": run, "n_images": interval.n,
                         "dice": interval.mean, "ci_low": interval.low,
                         "ci_high": interval.high})
    overall = {g: np.mean([r["dice"] for r in rows if r["group"] == g])
               for g in {r["group"] for r in rows}}
    return sorted(rows, key=lambda r: (overall[r["group"]], r["group"], r["run"]))


def prediction_rows(models: dict, root, names: Sequence[str], notes: Sequence[str]) -> list[dict]:
    """Rows for :func:`lab2.figures.plot_prediction_grid`, at each photo's original size."""
    rows = []
    for name, note in zip(names, notes, strict=True):
        image, _, mask = read_example(root, name)
        predictions, dice = {}, {}
        for run, (model, config) in models.items():
            predictions[run] = predict_mask(model, config, image)
            dice[run] = image_dice(predictions[run], mask)
        rows.append({"name": name, "note": note, "image": image, "mask": mask,
                     "predictions": predictions, "dice": dice})
    return rows
