"""The report's experiment: UNet and ResNet34-UNet, each without and with preprocessing, trained,
tested by Dice, and tabulated beside the report's numbers (its Table 1).

An experiment folder holds one run folder per model (``unet_raw``, ``unet_preprocessed``, …),
``results.csv``, ``results.md`` and ``histories.csv`` (every epoch of the four runs, for the loss
curves), and ``experiment.json`` (the data set and profile the folder belongs to). Finished runs
are skipped and an interrupted one resumes, so the command can simply be run again.

What makes a row of Table 1 trustworthy:

* a run counts as finished only when its ``last.pt`` holds the final epoch; its epochs, best
  validation Dice and history are read from that checkpoint, never from a file written beside it;
* test metrics are reused only when the content hash of ``best.pt``, the data set's fingerprint,
  the split and the evaluation settings all match (:func:`lab2.evaluate.evaluation_key`);
* a folder belongs to one data set and one profile: running it on another refuses, in one line;
* one process owns the folder at a time (:mod:`lab2.locks`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from pathlib import Path

from . import atomic, locks
from .config import TrainConfig, profile_config, resolve_profile
from .data import dataset_fingerprint
from .data.sample import dataset_label, is_sample
from .evaluate import evaluate_checkpoint
from .paths import runs_dir
from .runs import check_same_data, git_commit, reconcile_run, run_summary
from .train import train

log = logging.getLogger(__name__)

#: The report's test average Dice (docs/report.md, "Reported results").
REPORTED_DICE = {
    ("unet", False): 0.8887, ("unet", True): 0.8945,
    ("resnet34_unet", False): 0.9319, ("resnet34_unet", True): 0.9359,
}
RUNS = tuple(REPORTED_DICE)
RESULT_FIELDS = ("model", "preprocess", "dice", "dice_pooled", "dice_original",
                 "dice_pooled_original", "reported_dice", "n_test", "epochs", "best_epoch",
                 "best_val_dice",
                 "image_size", "profile", "data")


def default_out(profile: str, root) -> Path:
    return runs_dir() / f"{profile}-{'sample' if is_sample(root) else 'real'}"


def _check_folder_data(out: Path, root, profile: str) -> None:
    """Record (first time) or check (later) which data set and profile ``out`` belongs to."""
    record = {"dataset_fingerprint": dataset_fingerprint(root), "data": dataset_label(root),
              "root": str(Path(root).expanduser().resolve()), "profile": profile}
    path = out / "experiment.json"
    if not path.is_file():
        atomic.write_json(path, record)
        return
    stored = json.loads(path.read_text())
    if stored.get("dataset_fingerprint") != record["dataset_fingerprint"]:
        raise ValueError(
            f"{out} holds runs of the {stored.get('data')} in {stored.get('root')} (fingerprint "
            f"{stored.get('dataset_fingerprint')}), not of the {record['data']} in {record['root']}"
            f" (fingerprint {record['dataset_fingerprint']}); use another --out for this data set")
    if stored.get("profile") != profile:
        raise ValueError(f"{out} holds runs of profile {stored.get('profile')!r}, not {profile!r};"
                         " use another --out, or the same --profile")


def _run_config(run_dir: Path, summary: dict | None, wanted: TrainConfig, overrides: dict
                ) -> TrainConfig:
    """What a run should be now: a new run (no ``summary``) gets ``wanted``; an existing one keeps
    its own settings with only the fields given explicitly (``overrides``) changed."""
    if summary is None:
        return wanted
    saved = TrainConfig.from_dict(summary["config"])
    if saved.profile != wanted.profile:
        raise ValueError(f"{run_dir} was trained with profile {saved.profile!r}, not "
                         f"{wanted.profile!r}; use another --out, or the same --profile")
    config = saved.replace(**{k: v for k, v in overrides.items() if v is not None})
    config.changes_from(saved, fix=f"{run_dir} holds a run with the former; use another --out "
                        "for an experiment with the new settings")   # raises if it cannot change
    return config


def run_experiment(profile: str | None = None, root=None, out=None, *, progress: bool = True,
                   runs=RUNS, **overrides) -> tuple[list[dict], Path]:
    """Train (or resume, or skip) and test each run; write the tables; return the result rows
    and the experiment folder. ``overrides`` set single TrainConfig fields: for runs not started
    yet, and as changes (:data:`lab2.config.RESUMABLE_FIELDS` only) for runs that exist."""
    name = resolve_profile(profile)
    out = Path(out) if out is not None else default_out(name, root)
    with locks.owned(locks.folder_lock(out), f"the experiment folder {out}",
                     fix="choose a writable --out folder"):
        _check_folder_data(out, root, name)
        return _run_all(name, root, out, progress, runs, overrides)


def _run_all(name: str, root, out: Path, progress: bool, runs, overrides: dict
             ) -> tuple[list[dict], Path]:
    label = dataset_label(root)
    fingerprint = dataset_fingerprint(root)
    rows, histories = [], []
    for model, preprocess in runs:
        wanted = profile_config(name, model=model, preprocess=preprocess, **overrides)
        run_dir = out / wanted.run_name
        with locks.owned(locks.folder_lock(run_dir), f"the run folder {run_dir}",
                         fix="choose a writable --out folder"):
            summary = run_summary(run_dir)
            config = _run_config(run_dir, summary, wanted, overrides)
            if summary is not None:
                check_same_data(run_dir, summary["data"], fingerprint, root)
            if summary is not None and summary["epoch"] >= config.epochs:
                log.info("%s: finished earlier (last.pt holds epoch %d), skipping training",
                         config.run_name, summary["epoch"])
                summary = reconcile_run(run_dir)
            else:
                train(config, root, run_dir, resume=summary is not None, progress=progress)
                summary = run_summary(run_dir)
            metrics = evaluate_checkpoint(run_dir / "best.pt", root, "test", progress=progress,
                                          reuse=True)
        history = summary["history"]
        histories += [{"run": config.run_name, "model": model, "preprocess": preprocess, **h}
                      for h in history]
        rows.append({
            "model": model, "preprocess": preprocess, "dice": metrics["dice"],
            "dice_pooled": metrics["dice_pooled"], "dice_original": metrics["dice_original"],
            "dice_pooled_original": metrics["dice_pooled_original"],
            "reported_dice": REPORTED_DICE[(model, preprocess)], "n_test": metrics["n_images"],
            "epochs": summary["epoch"], "best_epoch": metrics["epoch"],
            "best_val_dice": summary["best_dice"],
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
        lines += ["**SYNTHETIC SAMPLE** — these numbers come from lab2's generated sample, not "
                  "from Oxford-IIIT Pet; they cannot be compared with the report's column.", ""]
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
