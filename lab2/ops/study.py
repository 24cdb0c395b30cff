"""The report's future work, measured: ``python -m lab2 experiment --study future-work``.

The report ends with proposals it never tried. The study trains the report's best model
(ResNet34-UNet with the preprocessing chain: the baseline) and one arm per proposal, each the
baseline with one thing changed — a Transformer encoder (LeViT-UNet), grayscale input, an edge
channel, twice the epochs (the learning-rate milestones scaled with them) — with 3 seeds each by
default, and compares every arm with the baseline by the statistics of Table 1: per test image,
b − a of Dice, Boundary IoU and the background false-positive rate, a 95 % interval over the test
images and the seeds (:func:`lab2.stats.bootstrap_difference`), Holm's correction over the whole
study and a verdict in words. Beside it, each model's parameters, GFLOPs per image and images per
second at the profile's size.

The study's folder (``runs/<profile>-<real|sample>-future-work``) holds one run folder per arm and
seed (``baseline``, ``gray_seed1``, …) and ``study.json`` (every number: what notebook 05 reads),
``study.md`` (the table) and ``study.csv`` (the comparisons). It is resumable and safe as the
four-model experiment is: finished runs are skipped, an interrupted one resumes, one process owns
a run folder, each run folder holds the run its arm needs (by the run's own settings), and the
folder belongs to one data set and profile.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import TrainConfig, profile_config
from ..models import INPUT_CHANNELS, model_for
from ..stats import ALPHA, N_RESAMPLES
from . import atomic
from .comparisons import COMPARISON_FIELDS, compare, seeds_to_decide
from .experiment import TABLE_MEASURES, default_out, open_folder, settle, train_and_test
from .fingerprint import dataset_fingerprint
from .runs import check_role, git_commit, role_of, run_summary, short_commit
from .sample import dataset_label

log = logging.getLogger(__name__)

STUDY = "future-work"
#: The baseline: the report's best model (its Table 1).
BASELINE = dict(model="resnet34_unet", preprocess=True)
#: arm → (what it is, the settings it changes in the baseline; ``epochs_factor`` multiplies the
#: profile's epochs and learning-rate milestones).
ARMS = {
    "baseline": ("ResNet34-UNet with preprocessing (the report's best)", {}),
    "levit_unet": ("a Transformer encoder: LeViT-UNet", {"model": "levit_unet"}),
    "gray": ("grayscale input", {"input": "gray"}),
    "edges": ("RGB and a Canny edge channel", {"input": "edges"}),
    "epochs_2x": ("twice the epochs", {"epochs_factor": 2}),
}
#: Seeds of a study unless ``--seeds`` says otherwise: an interval over training runs needs some.
STUDY_SEEDS = (0, 1, 2)
#: Columns of ``study.csv`` (the comparisons, each arm against the baseline).
STUDY_FIELDS = (*COMPARISON_FIELDS, "seeds_needed", "measure", "profile", "data")
STUDY_VERSION = 1


def study_folder(profile: str, root) -> Path:
    return Path(f"{default_out(profile, root)}-{STUDY}")


def arm_config(profile: str, arm: str, seed: int, **overrides) -> TrainConfig:
    """The config of one arm's run: the baseline with the arm's change, on ``profile``."""
    changes = dict(ARMS[arm][1])
    factor = changes.pop("epochs_factor", 1)
    config = profile_config(profile, **{**BASELINE, **overrides, **changes, "seed": seed})
    if factor != 1:
        config = config.replace(epochs=config.epochs * factor,
                                milestones=tuple(m * factor for m in config.milestones))
    return config


def run_name_of(arm: str, seed: int) -> str:
    return arm + (f"_seed{seed}" if seed else "")


def model_facts(config: TrainConfig, plan_device: str = "cpu") -> dict:
    """A network's parameters, forward GFLOPs for one image at the config's size (counted on the
    meta device: no arithmetic) and inference images per second on this machine's CPU (a batch
    of 4, the median of ``torch.utils.benchmark``'s adaptive repeats)."""
    from torch.utils import benchmark
    from torch.utils.flop_counter import FlopCounterMode
    size = config.image_size
    channels = INPUT_CHANNELS[config.input]
    with torch.device("meta"):
        meta = model_for(config).eval()
        with FlopCounterMode(display=False) as counter:
            meta(torch.empty(1, channels, size, size))
    model = model_for(config).eval()
    x = torch.randn(4, channels, size, size)
    with torch.no_grad():
        model(x)                                           # warm-up
        timer = benchmark.Timer("model(x)", globals={"model": model, "x": x},
                                num_threads=torch.get_num_threads())
        seconds = timer.blocked_autorange(min_run_time=1.0).median
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "gflops": counter.get_total_flops() / 1e9, "images_per_s": 4 / seconds,
            "measured_on": plan_device}


def _facts_per_network(configs: dict[str, TrainConfig]) -> dict[str, dict]:
    """:func:`model_facts` of each arm, measured once per distinct network (arms that differ only
    in training, such as twice the epochs, share the baseline's numbers rather than showing
    two timings of one network that differ by noise)."""
    measured: dict[tuple, dict] = {}
    facts = {}
    for arm, config in configs.items():
        key = (config.model, config.input, config.image_size, config.base_channels)
        if key not in measured:
            measured[key] = model_facts(config)
        facts[arm] = measured[key]
    return facts


def run_study(profile: str | None = None, root=None, out=None, *,
              seeds: Sequence[int] = STUDY_SEEDS, arms: Sequence[str] = tuple(ARMS),
              progress: bool = True, **overrides) -> dict:
    """Train (or resume, or skip) and test every arm once per seed; write ``study.json``,
    ``study.md`` and ``study.csv``; return what ``study.json`` holds."""
    name, root, seeds = settle(profile, root, seeds)
    if "baseline" not in arms:
        raise ValueError("a study compares its arms with the baseline: keep it among the arms")
    out = Path(out) if out is not None else study_folder(name, root)
    planned = [(arm, seed, arm_config(name, arm, seed, **overrides), out / run_name_of(arm, seed))
               for seed in seeds for arm in arms]
    for _, _, wanted, run_dir in planned:       # every run folder holds its arm's run
        check_role(run_dir, (run_summary(run_dir) or {}).get("config"), wanted)
    with open_folder(out, "study", root, name, progress):
        fingerprint = dataset_fingerprint(root)
        per_image: dict[str, list[dict]] = {arm: [] for arm in arms}
        rows, histories = [], []
        for arm, seed, wanted, run_dir in planned:
            log.info("%s: %s, seed %d", out.name, arm, seed)
            summary, config, metrics, measures = train_and_test(run_dir, wanted, overrides,
                                                                fingerprint, root, progress)
            per_image[arm].append(measures)
            histories += [{"run": run_dir.name, "arm": arm, "seed": seed, **h}
                          for h in summary["history"]]
            rows.append({"run": run_dir.name, "arm": arm, "seed": seed, **role_of(config),
                         "epochs": summary["epoch"], **{m: metrics[m] for m in TABLE_MEASURES},
                         "n_test": metrics["n_images"], "best_val_dice": summary["best_dice"],
                         "evaluation_key": metrics["key"],
                         "per_image_sha256": metrics["per_image_sha256"]})
    pairs = [(f"{ARMS[arm][0]} vs the baseline", "baseline", arm) for arm in arms
             if arm != "baseline"]
    comparisons = compare(per_image, pairs=pairs, name_of=str)
    for c in comparisons:
        c["seeds_needed"] = seeds_to_decide(per_image[c["model_a"]], per_image[c["model_b"]],
                                            c["measure"])
    facts = _facts_per_network({arm: arm_config(name, arm, 0, **overrides) for arm in arms})
    results = {"version": STUDY_VERSION, "study": STUDY, "profile": name,
               "data": dataset_label(root), "seeds": list(seeds), "arms": list(arms),
               "date": dt.date.today().isoformat(), "git_commit": git_commit(),
               "runs": rows, "comparisons": comparisons, "models": facts,
               "histories": histories}
    write_study(out, results)
    return results


def _arm_means(results: dict) -> dict[str, dict]:
    table = {}
    for arm in results["arms"]:
        rows = [r for r in results["runs"] if r["arm"] == arm]
        table[arm] = {m: sum(r[m] for r in rows) / len(rows) for m in ("dice", "boundary_iou",
                                                                          "background_fpr")}
        table[arm]["epochs"] = rows[0]["epochs"]
    return table


def study_markdown(results: dict) -> str:
    """The study's table: each arm's test measures (mean over seeds) and model, then each arm
    against the baseline with its interval, Holm-adjusted p-value and verdict."""
    synthetic = results["data"] == "synthetic sample"
    n_seeds = len(results["seeds"])
    means = _arm_means(results)
    lines = [f"# The report's future work, measured ({results['data']}, profile "
             f"`{results['profile']}`)", "",
             f"Written by `python -m lab2 experiment --study {STUDY}` on {results['date']}, code "
             f"{short_commit(results['git_commit'])}.", ""]
    if synthetic:
        lines += ["**SYNTHETIC SAMPLE** — these numbers come from lab2's generated sample, not "
                  "from Oxford-IIIT Pet: they show the study's code working, not an answer to "
                  "the report's questions.", ""]
    if n_seeds == 1:
        lines += ["One seed per arm: the intervals cover the choice of test images only, not "
                  "the spread between training runs; such a run shows the code working, not an "
                  "answer.", ""]
    lines += ["| arm | what changes | average Dice | Boundary IoU | background false positives | "
              "epochs | parameters | GFLOPs / image | images/s (CPU, inference) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for arm in results["arms"]:
        m, f = means[arm], results["models"][arm]
        lines.append(f"| {arm} | {ARMS[arm][0]} | {m['dice']:.4f} | {m['boundary_iou']:.4f} | "
                     f"{m['background_fpr']:.4f} | {m['epochs']} | {f['parameters'] / 1e6:.2f} M"
                     f" | {f['gflops']:.2f} | {f['images_per_s']:.1f} |")
    comparisons = results["comparisons"]
    lines += ["", f"Means over {n_seeds} seed(s) of the test images. Parameters and GFLOPs at the "
              f"profile's size and width; images per second measured on this machine's CPU "
              "(a batch of 4, the median of repeated timings; arms with the same network share one "
              "measurement).", "",
              "## Each arm against the baseline (b − a, 95 % interval over test images"
              f"{' and seeds' if n_seeds > 1 else ''})", "",
              f"A verdict says \"better\" only when the interval excludes 0 and the Holm-adjusted "
              f"p-value over all {len(comparisons)} comparisons of the study is below {ALPHA:g} "
              f"({N_RESAMPLES:,} bootstrap resamples; lower is better for background false "
              "positives).", "",
              "| comparison | images | seeds | b − a | 95 % interval | p | Holm p | verdict | "
              "seeds to decide (estimate) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        needed = c.get("seeds_needed")
        lines.append(f"| {c['comparison']} | {c['n_images']} | {c['n_seeds']} | "
                     f"{c['mean_difference']:+.4f} | [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] |"
                     f" {c['p_value']:.4f} | {c['p_holm']:.4f} | {c['verdict']} | "
                     f"{'—' if needed is None else needed} |")
    lines += ["", "Seeds to decide: about how many seeds of each arm would show a difference of "
              "the size seen, with the seed-to-seed spread seen, on these test images, four "
              "times out of five (80 % power; `lab2.ops.comparisons.seeds_to_decide`); — where the "
              "test images' own spread is wider than the difference, so that no number of seeds "
              "would show it, only more test images. "
              + ("It needs two seeds or more to be estimated. " if n_seeds == 1 else
                 f"Estimated from {n_seeds} seeds, so rough. ")
              + ("Estimated on the synthetic sample: on Oxford-IIIT Pet the differences and "
                 "the spread differ, so take it as an order of magnitude for planning, not as "
                 "a measurement." if synthetic else
                 "Take it as an order of magnitude for planning, not as a measurement.")]
    return "\n".join(lines) + "\n"


def write_study(out: Path, results: dict) -> None:
    """``study.md`` and ``study.csv`` for people, then ``study.json`` (last: it names the others'
    SHA-256, as ``results.json`` does)."""
    files = atomic.write_texts(out, {
        "study.md": study_markdown(results),
        "study.csv": atomic.csv_text([dict(c, profile=results["profile"], data=results["data"])
                                      for c in results["comparisons"]], STUDY_FIELDS)})
    atomic.write_json(out / "study.json", {**results, "files": files})


def load_study(out) -> dict:
    """What ``study.json`` holds, with the text of the ``study.md`` it was written with (under
    ``markdown``); one line naming the command that rewrites it when it is missing, damaged or
    no longer the one beside its tables."""
    out = Path(out)
    command = f"python -m lab2 experiment --study {STUDY} --out {out}"
    if not (out / "study.json").is_file():
        raise FileNotFoundError(f"no {out / 'study.json'}: run {command}")
    results = atomic.read_json(out / "study.json", f"rewrite it with: {command}")
    if not isinstance(results, dict) or results.get("version") != STUDY_VERSION:
        raise ValueError(f"{out / 'study.json'} is not this lab2's record of a study; rewrite it "
                         f"with: {command}")
    results["markdown"] = atomic.read_exact(out / "study.md",
                                            results["files"]["study.md"]).decode("utf-8")
    return results


__all__ = ["ARMS", "BASELINE", "STUDY", "STUDY_SEEDS", "arm_config", "load_study",
           "model_facts", "run_study", "study_folder", "study_markdown"]
