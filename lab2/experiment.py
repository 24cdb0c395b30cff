"""The report's experiment: UNet and ResNet34-UNet, each without and with preprocessing, trained,
tested by Dice, and tabulated beside the report's numbers (its Table 1).

An experiment folder holds one run folder per model (``unet_raw``, ``unet_preprocessed``, …),
``results.csv``, ``results.md`` and ``histories.csv`` (every epoch of the four runs, for the loss
curves). Finished runs are skipped and an interrupted one resumes, so the command can simply be
run again.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

from . import atomic
from .config import profile_config, resolve_profile
from .data.sample import dataset_label, is_sample
from .evaluate import evaluate_checkpoint
from .paths import runs_dir
from .train import git_commit, is_finished, read_history, train

#: The report's test average Dice (REPORT.md, "Reported results").
REPORTED_DICE = {
    ("unet", False): 0.8887, ("unet", True): 0.8945,
    ("resnet34_unet", False): 0.9319, ("resnet34_unet", True): 0.9359,
}
RUNS = tuple(REPORTED_DICE)
RESULT_FIELDS = ("model", "preprocess", "dice", "dice_pooled", "dice_original",
                 "dice_pooled_original", "reported_dice", "n_test", "epochs", "best_val_dice",
                 "image_size", "profile", "data")


def default_out(profile: str, root) -> Path:
    return runs_dir() / f"{profile}-{'sample' if is_sample(root) else 'real'}"


def _test_metrics(run_dir: Path, root, progress: bool) -> dict:
    """Test metrics of a run's best.pt, evaluated once and reused while best.pt is unchanged."""
    path = run_dir / "metrics.json"
    best = run_dir / "best.pt"
    if path.is_file():
        stored = json.loads(path.read_text()).get("test")
        if stored and stored.get("checkpoint_mtime") == best.stat().st_mtime:
            return stored
    return evaluate_checkpoint(best, root, "test", progress=progress)


def run_experiment(profile: str | None = None, root=None, out=None, *, progress: bool = True,
                   runs=RUNS, **overrides) -> tuple[list[dict], Path]:
    """Train (or resume, or skip) and test each run; write the tables; return the result rows
    and the experiment folder."""
    name = resolve_profile(profile)
    out = Path(out) if out is not None else default_out(name, root)
    out.mkdir(parents=True, exist_ok=True)
    label = dataset_label(root)
    rows, histories = [], []
    for model, preprocess in runs:
        config = profile_config(name, model=model, preprocess=preprocess, **overrides)
        run_dir = out / config.run_name
        if is_finished(run_dir):
            print(f"{config.run_name}: finished earlier, skipping training")
        else:
            train(config, root, run_dir, resume=(run_dir / "last.pt").is_file(), progress=progress)
        metrics = _test_metrics(run_dir, root, progress)
        history = read_history(run_dir / "history.csv")
        histories += [{"run": config.run_name, "model": model, "preprocess": preprocess, **h}
                      for h in history]
        rows.append({
            "model": model, "preprocess": preprocess, "dice": metrics["dice"],
            "dice_pooled": metrics["dice_pooled"], "dice_original": metrics["dice_original"],
            "dice_pooled_original": metrics["dice_pooled_original"],
            "reported_dice": REPORTED_DICE[(model, preprocess)], "n_test": metrics["n_images"],
            "epochs": len(history), "best_val_dice": max(h["val_dice"] for h in history),
            "image_size": config.image_size, "profile": name, "data": label,
        })
    write_tables(out, rows, histories, name, label)
    return rows, out


def _csv(rows: list[dict], fields) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def results_markdown(rows: list[dict], profile: str, label: str) -> str:
    """Table 1: lab2's test Dice beside the report's."""
    synthetic = label == "synthetic sample"
    lines = [
        f"# Table 1 — test Dice ({label}, profile `{profile}`)",
        "",
        f"Written by `python -m lab2 experiment` on {dt.date.today().isoformat()}, "
        f"code {git_commit()[:12]}.",
        "",
    ]
    if synthetic:
        lines += ["**SYNTHETIC SAMPLE** — these numbers come from lab2's generated sample, not from "
                  "Oxford-IIIT Pet; they cannot be compared with the report's column.", ""]
    if profile != "full":
        lines += [f"Profile `{profile}` is smaller than the report's setup (512 px, 50 epochs, "
                  "full-width networks).", ""]
    lines += ["| model | preprocessing | average Dice | pooled Dice | average Dice, original "
              "size | pooled Dice, original size | report's average Dice | test images | epochs |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {'yes' if r['preprocess'] else 'no'} | {r['dice']:.4f} | "
            f"{r['dice_pooled']:.4f} | {r['dice_original']:.4f} | {r['dice_pooled_original']:.4f}"
            f" | {r['reported_dice']:.4f} | {r['n_test']} | {r['epochs']} |")
    lines += ["", f"Average Dice = mean of per-image foreground Dice at the training size "
              f"({rows[0]['image_size']} px) unless marked original size (logits resized back "
              "to each photo); pooled = one Dice over all test pixels."]
    return "\n".join(lines) + "\n"


def write_tables(out: Path, rows: list[dict], histories: list[dict], profile: str,
                 label: str) -> None:
    atomic.write_text(out / "results.csv", _csv(rows, RESULT_FIELDS))
    atomic.write_text(out / "results.md", results_markdown(rows, profile, label))
    fields = ("run", "model", "preprocess", "epoch", "train_loss", "val_loss", "val_dice",
              "val_dice_pooled", "lr", "seconds")
    atomic.write_text(out / "histories.csv", _csv(histories, fields))


def load_results(out) -> tuple[list[dict], list[dict]]:
    """(results rows, history rows) of an experiment folder, with numbers parsed."""
    out = Path(out)

    def parse(value: str):
        if value in ("True", "False"):
            return value == "True"
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    with open(out / "results.csv") as f:
        rows = [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
    with open(out / "histories.csv") as f:
        histories = [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return rows, histories


__all__ = ["run_experiment", "REPORTED_DICE", "RUNS", "load_results", "results_markdown",
           "default_out"]
