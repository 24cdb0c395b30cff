"""The written analysis of an experiment (notebook 04's text) and the report's Table 2 claims
tested over training runs, every number taken from the experiment's results."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from ..config import run_name
from ..stats import mean_and_std, over_seeds
from .comparisons import CLAIM_OUTCOMES, claim_outcome


def epochs_to_reach(history: Sequence[dict], fraction: float = 0.95) -> int:
    """First epoch whose validation Dice reaches ``fraction`` of the run's best."""
    best = max(h["val_dice"] for h in history)
    return next(h["epoch"] for h in history if h["val_dice"] >= fraction * best)


def roughness(losses: Sequence[float]) -> float:
    """Mean absolute change of a loss from one epoch to the next."""
    return float(np.mean(np.abs(np.diff(losses))))


#: The report's Table 2 claims, each a per-run statistic compared over seeds
#: (:func:`table2_claims`):
#: (claim, statistic, which run is a and which b, the sign the claim gives b − a).
TABLE2_CLAIMS = (
    ("preprocessing smooths the validation loss, UNet", "roughness",
     ("unet", False), ("unet", True), -1),
    ("preprocessing smooths the validation loss, ResNet34-UNet", "roughness",
     ("resnet34_unet", False), ("resnet34_unet", True), -1),
    ("ResNet34-UNet converges faster, no preprocessing", "epochs to 95 %",
     ("unet", False), ("resnet34_unet", False), -1),
    ("ResNet34-UNet converges faster, with preprocessing", "epochs to 95 %",
     ("unet", True), ("resnet34_unet", True), -1),
    ("ResNet34-UNet reaches a lower validation loss, no preprocessing", "lowest validation loss",
     ("unet", False), ("resnet34_unet", False), -1),
    ("ResNet34-UNet reaches a lower validation loss, with preprocessing",
     "lowest validation loss", ("unet", True), ("resnet34_unet", True), -1),
)

#: How each statistic is read off one run's history rows.
RUN_STATISTICS = {
    "roughness": lambda rows: roughness([h["val_loss"] for h in rows]),
    "epochs to 95 %": epochs_to_reach,
    "lowest validation loss": lambda rows: min(h["val_loss"] for h in rows),
}


def runs_by_seed(histories: Sequence[dict]) -> dict[tuple, dict[int, list[dict]]]:
    """History rows grouped by run, (network, preprocessing), then by seed, in order."""
    runs: dict[tuple, dict[int, list[dict]]] = {}
    for h in histories:
        runs.setdefault((h["model"], h["preprocess"]), {}).setdefault(
            h.get("seed", 0), []).append(h)
    return runs


def table2_claims(histories: Sequence[dict]) -> list[dict]:
    """The report's training claims (its Table 2: preprocessing smooths the validation loss;
    ResNet34-UNet converges faster and to a lower loss), each as a paired comparison over the
    seeds both runs have (:func:`lab2.stats.over_seeds`): the statistic's b − a, its 95 %
    interval over seeds, whether it shows the claim, and the seeds a decision would take."""
    runs = runs_by_seed(histories)
    rows = []
    for claim, statistic, a, b, sign in TABLE2_CLAIMS:
        seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        if not seeds or (statistic == "roughness"
                         and min(len(runs[k][s]) for k in (a, b) for s in seeds) < 3):
            continue
        values = [[RUN_STATISTICS[statistic](runs[key][s]) for s in seeds] for key in (a, b)]
        row = {"claim": claim, "statistic": statistic, "model_a": run_name(*a),
               "model_b": run_name(*b), **over_seeds(*values)}
        if row["low"] is None:
            row["outcome"] = ("one training run each: no spread between runs is measured, so "
                              "nothing can be shown; `--seeds 0 1 2` gives an interval")
        elif row["low"] > 0 or row["high"] < 0:
            agrees = (row["mean"] > 0) == (sign > 0)
            row["outcome"] = "confirmed" if agrees else "contradicted"
        else:
            row["outcome"] = ("not shown: the interval holds 0" + (
                f"; about {row['seeds_needed']} seeds would show a difference of this size "
                f"with this spread (estimated from {row['n_seeds']} seeds)"
                if row["seeds_needed"] else ""))
        rows.append(row)
    return rows


def _mean_sd(values: Sequence[float], digits: int) -> str:
    """``values``' mean ± standard deviation (over seeds) with at least one decimal, or the one
    value (a whole number as it is)."""
    if len(values) == 1:
        return str(values[0]) if isinstance(values[0], int) else f"{values[0]:.{digits}f}"
    mean, sd = mean_and_std(values)
    digits = max(digits, 1)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def analysis_text(results: Sequence[dict], histories: Sequence[dict],
                  comparisons: Sequence[dict] = (), differences: Collection[str] = ()) -> str:
    """The written analysis, every number taken from ``results`` (Table 1's rows),
    ``histories`` and ``comparisons`` (:func:`lab2.ops.comparisons.compare`). ``differences``, the
    settings the runs were not trained alike in (the keys of
    :func:`lab2.ops.experiment.training_differences`), come first: each verdict below then compares
    more than the network or the preprocessing. Then what the comparisons say of each of the
    report's claimed Dice differences (:func:`lab2.ops.comparisons.claim_outcome`), then the other
    comparisons' verdicts, convergence and the validation loss's roughness."""
    lines = []
    if differences:
        lines.append(f"- **Not trained alike:** the runs differ in {', '.join(differences)} "
                     "(Table 1 lists how), so a verdict below may reflect those settings rather "
                     "than the network or the preprocessing.")
    outcomes = [claim_outcome(c) for c in comparisons]     # None for a row without a claim
    claims = [(c, outcome) for c, outcome in zip(comparisons, outcomes, strict=True)
              if outcome is not None]
    if claims:
        counts = {k: sum(outcome == k for _, outcome in claims) for k in CLAIM_OUTCOMES}
        data = results[0].get("data") if results else None
        lines.append(
            f"- **The report's {len(claims)} Dice claims, tested here**"
            + (" (on the synthetic sample: this says nothing about Oxford-IIIT Pet)"
               if data == "synthetic sample" else "")
            + f", b − a with its 95 % interval over {claims[0][0]['n_images']} test images and "
              f"{claims[0][0]['n_seeds']} seed(s): "
            + ", ".join(f"{n} {CLAIM_OUTCOMES[k][0]}" for k, n in counts.items() if n) + ".")
        lines += [f"  - {c['comparison'].removeprefix('Dice: ')}: the report "
                  f"{c['reported_difference']:+.4f}, here {c['mean_difference']:+.4f} "
                  f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] — {CLAIM_OUTCOMES[outcome][1]}."
                  for c, outcome in claims]
    for c, outcome in zip(comparisons, outcomes, strict=True):
        if outcome is not None:
            continue                                     # said above, with the report's claim
        lines.append(f"- **{c['comparison']}:** {c['model_b']} − {c['model_a']} = "
                     f"{c['mean_difference']:+.4f}, 95 % interval [{c['ci_low']:+.4f}, "
                     f"{c['ci_high']:+.4f}] over {c['n_images']} test images, "
                     f"{c['n_seeds']} seed(s): {c['verdict']}.")
    curves = {run_name(*run): by_seed for run, by_seed in runs_by_seed(histories).items()}
    if curves:
        seeds = max(len(by_seed) for by_seed in curves.values())
        spread = (f"mean ± sd over {seeds} seeds" if seeds > 1 else
                  "one training run each, so no spread is measured: `--seeds 0 1 2` measures it")
        speed = {run: [epochs_to_reach(rows) for rows in by_seed.values()]
                 for run, by_seed in curves.items()}
        lines.append(f"- **Convergence** ({spread}; the report: ResNet34-UNet converges faster): "
                     "epochs to reach 95 % of the best validation Dice — "
                     + ", ".join(f"{run} {_mean_sd(n, 0)}"
                                 for run, n in speed.items()) + ".")
        rough = {run: [roughness([h["val_loss"] for h in rows]) for rows in by_seed.values()
                       if len(rows) > 2] for run, by_seed in curves.items()}
        if any(rough.values()):
            lines.append(f"- **Validation-loss roughness**, the mean absolute epoch-to-epoch "
                         f"change ({spread}; the report: preprocessing smooths it) — "
                         + ", ".join(f"{run} {_mean_sd(r, 4)}" for run, r in rough.items()
                                     if r) + ".")
    claims = table2_claims(histories)
    if claims:
        lines.append("- **The report's Table 2 claims, tested over training runs** (b − a of "
                     "each run's statistic, paired by seed, 95 % t-interval over the seeds):")
        for c in claims:
            interval = ("" if c["low"] is None else
                        f" [{c['low']:+.4g}, {c['high']:+.4g}]")
            lines.append(f"  - {c['claim']} ({c['statistic']}, {c['model_b']} − "
                         f"{c['model_a']}): {c['mean']:+.4g}{interval} over {c['n_seeds']} "
                         f"seed(s) — {c['outcome']}.")
    return "\n".join(lines)
