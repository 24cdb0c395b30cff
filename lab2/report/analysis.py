"""Reading an experiment's results: per-image Dice, the hardest test images, predictions of the
four runs for the Table 3 grid, and the numbers behind the written analysis."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import run_name
from ..data.reading import read_example
from ..evaluate import load_trained_model
from ..experiment import RUNS
from ..metrics import image_dice
from ..predict import predict_mask

RUN_NAMES = tuple(run_name(m, p) for m, p in RUNS)


def per_image_dice(experiment: str | Path, split: str = "test") -> dict[str, dict[str, float]]:
    """run → {image name → Dice at the training size} from each run's per-image CSV."""
    out = {}
    for run in RUN_NAMES:
        path = Path(experiment) / run / f"per_image_{split}.csv"
        if path.is_file():
            with open(path) as f:
                out[run] = {row["name"]: float(row["dice"]) for row in csv.DictReader(f)}
    return out


def hardest_images(per_image: dict[str, dict[str, float]], n: int) -> list[str]:
    """The ``n`` images with the lowest Dice averaged over the runs."""
    names = set.intersection(*(set(d) for d in per_image.values()))
    mean = {name: np.mean([d[name] for d in per_image.values()]) for name in names}
    return sorted(names, key=lambda name: (mean[name], name))[:n]


def load_models(experiment: str | Path) -> dict:
    """run → (model, config) from each run's best.pt."""
    return {run: load_trained_model(Path(experiment) / run / "best.pt")[:2]
            for run in RUN_NAMES if (Path(experiment) / run / "best.pt").is_file()}


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


def epochs_to_reach(history: Sequence[dict], fraction: float = 0.95) -> int:
    """First epoch whose validation Dice reaches ``fraction`` of the run's best."""
    best = max(h["val_dice"] for h in history)
    return next(h["epoch"] for h in history if h["val_dice"] >= fraction * best)


def analysis_text(results: Sequence[dict], histories: Sequence[dict]) -> str:
    """The written analysis, every number taken from ``results`` and ``histories``."""
    by = {(r["model"], r["preprocess"]): r for r in results}
    lines = []
    for model, title in (("unet", "UNet"), ("resnet34_unet", "ResNet34-UNet")):
        if (model, False) in by and (model, True) in by:
            raw, pre = by[(model, False)]["dice"], by[(model, True)]["dice"]
            reported = by[(model, True)]["reported_dice"] - by[(model, False)]["reported_dice"]
            lines.append(f"- **Preprocessing, {title}:** average test Dice {raw:.4f} → {pre:.4f} "
                         f"({pre - raw:+.4f}; the report saw {reported:+.4f}).")
    for pre, label in ((False, "without"), (True, "with")):
        if ("unet", pre) in by and ("resnet34_unet", pre) in by:
            unet, resnet = by[("unet", pre)], by[("resnet34_unet", pre)]
            u, r = unet["dice"], resnet["dice"]
            reported = resnet["reported_dice"] - unet["reported_dice"]
            lines.append(f"- **ResNet34-UNet vs UNet, {label} preprocessing:** {r:.4f} vs {u:.4f} "
                         f"({r - u:+.4f}; the report: {reported:+.4f}).")
    runs = list(dict.fromkeys(h["run"] for h in histories))
    speed = {run: epochs_to_reach([h for h in histories if h["run"] == run]) for run in runs}
    lines.append("- **Convergence:** epochs to reach 95 % of the best validation Dice — " +
                 ", ".join(f"{run} {n}" for run, n in speed.items()) + ".")
    for run in runs:
        val = [h["val_loss"] for h in histories if h["run"] == run]
        if len(val) > 2:
            lines.append(f"- Validation-loss roughness of {run} (mean absolute epoch-to-epoch "
                         f"change): {np.mean(np.abs(np.diff(val))):.4f}.")
    return "\n".join(lines)
