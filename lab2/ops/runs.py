"""A run folder's records: what ``last.pt`` says, ``history.csv``, ``run.json`` and provenance.

A run folder holds ``last.pt`` (every epoch) and ``best.pt`` (best validation Dice) and, derived
from them, ``config.json``, ``run.json`` (provenance: git commit, data set fingerprint and label,
device, precision and why, versions, settings changed on resume) and ``history.csv`` (one row per
epoch). ``last.pt`` is the single source of truth: :func:`reconcile_run` rebuilds the others from
it after a kill between the end-of-epoch writes, and :func:`is_finished` trusts nothing else.
"""

from __future__ import annotations

import csv
import logging
import platform
import re
import subprocess
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

import torch

from .. import __version__
from ..config import RECIPE_FIELDS, RESUMABLE_FIELDS, TrainConfig, run_name, shown
from . import atomic
from .checkpoint import DamagedCheckpoint, check_entries, copy_checkpoint, load_checkpoint
from .console import shell_word
from .distributed import several_machines
from .fingerprint import same_data
from .paths import source_checkout
from .sample import dataset_label

log = logging.getLogger(__name__)

#: Files a run writes (removed by ``restart``); last.pt is the one the others derive from.
RUN_FILES = ("last.pt", "best.pt", "history.csv", "config.json", "run.json", "metrics.json")
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_dice", "val_dice_pooled", "lr", "seconds")


def git_commit() -> str:
    """The source checkout's commit (``+dirty`` when lab2's code has uncommitted changes: not
    the notebooks, which ``report`` re-executes in place); for an installed package,
    ``installed <version>``."""
    checkout = source_checkout()
    if checkout is None:
        return f"installed {__version__}"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                "lab2", "pyproject.toml"],
                               cwd=checkout, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def short_commit(commit: str) -> str:
    """:func:`git_commit` for a line of text: the hash cut to 12 characters, ``+dirty`` kept."""
    head, dirty, _ = commit.partition("+dirty")
    return head[:12] + dirty if len(head) == 40 else commit


def write_history(path: Path, history: list[dict]) -> None:
    atomic.write_text(path, atomic.csv_text(history, HISTORY_FIELDS))


def read_history(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def run_summary(run_dir: str | Path) -> dict | None:
    """What ``last.pt`` of a run folder says (epoch, best epoch and Dice, config with every field,
    history, data, settings changes), read through a memory map; None when there is no
    ``last.pt``."""
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        return None
    state = load_checkpoint(last, mmap=True)
    keys = ("epoch", "best_dice", "best_epoch", "history", "run_id", "data", "changes",
            "precision")
    # every field, those a run saved before they existed with the values it was trained with
    return {**{k: state.get(k) for k in keys},
            "config": TrainConfig.from_dict(state["config"]).to_dict()}


def saved_run(run_dir: str | Path) -> dict:
    """:func:`run_summary` of a run that must exist (``--resume``): FileNotFoundError if not."""
    summary = run_summary(run_dir)
    if summary is None:
        raise no_run_to_resume(Path(run_dir) / "last.pt")
    return summary


def no_run_to_resume(last: Path) -> FileNotFoundError:
    """The error of ``--resume`` without ``last``; on several machines the likely cause is an
    ``--out`` that only the first machine sees."""
    if several_machines():
        return FileNotFoundError(
            f"--resume: no {last} to continue from on this machine; --out must be a folder "
            "that every machine of the run sees (a shared file system), or drop --resume to "
            "start a new run")
    return FileNotFoundError(f"--resume: no {last} to continue from; drop --resume to start a "
                             "new run")


def saved_config(run_dir: str | Path) -> TrainConfig:
    """The config of the run in ``run_dir``, from its ``last.pt``."""
    return TrainConfig.from_dict(saved_run(run_dir)["config"])


def reconcile_run(run_dir: str | Path) -> dict | None:
    """Repair what a kill between the end-of-epoch writes can leave, from ``last.pt``.

    Copies ``last.pt`` to ``best.pt`` when ``last.pt`` names its own epoch as the best and
    ``best.pt`` does not hold it; rewrites ``history.csv`` from ``last.pt``'s history. Returns
    :func:`run_summary` (None without ``last.pt``). Raises ValueError when ``best.pt`` is missing
    or foreign and cannot be rebuilt. Call it holding the folder's lock.
    """
    run_dir = Path(run_dir)
    summary = run_summary(run_dir)
    if summary is None:
        return None
    best = run_dir / "best.pt"
    best_epoch = summary["best_epoch"]
    if best_epoch is not None:
        held, damaged = None, None
        if best.is_file():
            try:
                state = load_checkpoint(best, mmap=True)
                check_entries(best, best)          # its weights too: Table 1 is tested on them
                if state.get("run_id") == summary["run_id"]:
                    held = state["epoch"]
            except DamagedCheckpoint as e:
                damaged = e   # rebuilt below if possible
            except ValueError:
                held = None   # cut short or foreign: rebuilt below if possible
        if held != best_epoch:
            if best_epoch != summary["epoch"]:
                if damaged is not None:
                    raise damaged
                raise ValueError(
                    f"{best} does not hold epoch {best_epoch}, which {run_dir / 'last.pt'} names "
                    "as the best, and it cannot be rebuilt; train the run again with --restart")
            log.warning("%s: best.pt %s; copying it from last.pt, which holds that epoch",
                        run_dir, "is damaged" if damaged is not None else
                        f"was not written after epoch {best_epoch}")
            copy_checkpoint(run_dir / "last.pt", best)
    write_history(run_dir / "history.csv", summary["history"])
    return summary


def edited_config(run_dir: str | Path, config: TrainConfig, given: Iterable[str] = ()
                  ) -> str | None:
    """What a resumed run should say when its ``config.json`` gives settings other than
    ``config``, the ones it goes on with (from ``last.pt`` and the command), or None. Settings
    in ``given`` (the ones this command changes) were asked for and are not named.

    ``config.json`` records a run's settings; lab2 writes it and never reads it back, so a
    setting edited there (a new learning rate, more epochs) used to be overwritten in silence
    while the run went on with the old one."""
    path = Path(run_dir) / "config.json"
    try:
        recorded = TrainConfig.load(path).to_dict()
    except (OSError, ValueError, TypeError):
        return None   # missing or not a config: nothing was edited that could be applied
    used = config.to_dict()
    differ = [name for name in used if name in recorded and recorded[name] != used[name]
              and name not in given]
    if not differ:
        return None
    said = ", ".join(f"{name} {shown(recorded[name])}" for name in differ)
    goes = ", ".join(f"{name} {shown(used[name])}" for name in differ)
    flags = " ".join(f"--{name.replace('_', '-')} {shown(recorded[name])}" for name in differ
                     if name in RESUMABLE_FIELDS)
    how = f"to go on with the new values: --resume {flags}; " if flags else ""
    return (f"{path} says {said}, but the run goes on with {goes} (its last.pt and this "
            f"command's settings): config.json records a run's settings and is rewritten now, "
            f"never read back; {how}to train with all of the file: train --config "
            f"{shell_word(str(path))} --out NEW_FOLDER")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the kind of device and the CPU's, for ``run.json``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


def write_run_record(out: Path, record: dict) -> None:
    """Write ``run.json``: ``record`` (the run's data, device, precision, sizes, changes) with
    lab2's version, the git commit and the Python and PyTorch versions."""
    atomic.write_json(out / "run.json", {
        "lab2_version": __version__, "git_commit": git_commit(), **record,
        "torch": torch.__version__, "python": platform.python_version()})


def other_data(data: dict | None, fingerprint: str, root) -> str | None:
    """None when ``data`` (a run's record of the data set it was trained on) names the data set
    under ``root``, whose fingerprint is ``fingerprint``; else what the run was trained on and
    what ``root`` holds, in words."""
    if not data or same_data(data.get("fingerprint"), fingerprint, root):
        return None
    return (f"was trained on the {data.get('label')} in {data.get('root')} (fingerprint "
            f"{data.get('fingerprint')}), but {root} holds other data ({dataset_label(root)}, "
            f"fingerprint {fingerprint}): another data set, or files of it changed since (a "
            "reordered split list, an edited trimap)")


def check_same_data(run_dir: Path, data: dict | None, fingerprint: str, root) -> None:
    """Refuse to continue or report a run on a data set other than the one it was trained on
    (``fingerprint``: the one under ``root`` now)."""
    why = other_data(data, fingerprint, root)
    if why:
        raise ValueError(f"{run_dir} {why}; point --root at the data the run was trained on, put "
                         "the files back as they were, or use another --out")


#: What an experiment's run folder is for: the fields its name gives (``unet_preprocessed_seed2``).
ROLE_FIELDS = ("model", "preprocess", "input", "seed")


def role_of(config: TrainConfig | dict) -> dict:
    """The :data:`ROLE_FIELDS` of a config (or of its ``to_dict()``, or a table's row); ``input``
    is ``rgb`` in the configs of runs trained before it existed."""
    config = config if isinstance(config, dict) else config.to_dict()
    return {name: config.get(name, "rgb") if name == "input" else config[name]
            for name in ROLE_FIELDS}


def folder_role(name: str) -> dict | None:
    """What a run folder's name says its run is, as an experiment names its runs
    (:func:`lab2.config.run_name`): ``{"model", "preprocess", "seed"}``, or None for a name of
    the user's own (``train --out runs/try3``)."""
    from ..models import MODELS
    found = re.fullmatch(r"(.+)_(raw|preprocessed)(?:_(gray|edges))?(?:_seed(\d+))?", name)
    if found is None or found.group(1) not in MODELS:
        return None
    return {"model": found.group(1), "preprocess": found.group(2) == "preprocessed",
            "input": found.group(3) or "rgb", "seed": int(found.group(4) or 0)}


def describe_role(role: dict) -> str:
    """``UNet with preprocessing, seed 2``: a role (:func:`folder_role`) in words."""
    from ..models import TITLES
    name = TITLES.get(role["model"], role["model"])
    kind = role.get("input", "rgb")
    return (f"{name} {'with' if role['preprocess'] else 'without'} preprocessing"
            + (f", {kind} input" if kind != "rgb" else "") + f", seed {role['seed']}")


class WrongRun(ValueError):
    """A run folder holds another run than the one its name, or a table's row, says."""


def resume_changes(config: TrainConfig, saved: TrainConfig,
                   fix: str = "pass --restart to train the run again from scratch with the new "
                              "settings, or use another --out") -> dict[str, tuple]:
    """``{field: (saved value, this value)}`` for the fields ``config`` changes in ``saved``, the
    settings a run was trained with so far. Raises ValueError if a field outside
    :data:`lab2.config.RESUMABLE_FIELDS` differs (a run cannot resume as another model, image
    size, preprocessing, ...)."""
    changes = {f.name: (getattr(saved, f.name), getattr(config, f.name))
               for f in fields(config) if getattr(saved, f.name) != getattr(config, f.name)}
    fixed = [f"{name} {old!r} -> {new!r}" for name, (old, new) in changes.items()
             if name not in RESUMABLE_FIELDS]
    if fixed:
        raise ValueError(f"cannot change {', '.join(fixed)} when resuming (only "
                         f"{', '.join(RESUMABLE_FIELDS)} may change); {fix}")
    return changes


def check_role(run_dir: str | Path, config: TrainConfig | dict | None,
               wanted: TrainConfig | dict | None = None, *,
               what: str = "last.pt",
               then: str = "run the same command again, which trains the run that belongs there"
               ) -> None:
    """Raise :class:`WrongRun` when the run in ``run_dir`` — ``config``, its checkpoint's own
    settings, which alone say what it is; None while the folder holds no run — is not the
    network, preprocessing, input and seed that ``wanted`` (the config of a Table 1 row's run, or
    the row) or, without it, the folder's name says (nothing for a name of the user's own). An
    experiment took ``unet_preprocessed/`` for UNet with preprocessing by its name alone: a UNet
    trained there without ``--preprocess``, or a ResNet34-UNet's ``last.pt`` copied in, filled
    that row of Table 1 with another run's Dice. The message says to move the run aside, to the
    folder its settings name when that is free, and ``then`` (``{aside}``: where it went)."""
    run_dir = Path(run_dir)
    wanted = wanted or folder_role(run_dir.name)
    if config is None or wanted is None:
        return
    held, wanted = role_of(config), role_of(wanted)
    if held == wanted:
        return
    own = run_dir.with_name(run_name(held["model"], held["preprocess"], held["seed"],
                                     held["input"]))
    aside = own if not own.exists() else run_dir.with_name(run_dir.name + ".other")
    raise WrongRun(f"{run_dir} holds {describe_role(held)} (its {what}'s settings), but that "
                   f"folder is for {describe_role(wanted)}; move it out of the way (mv "
                   f"{shell_word(run_dir)} {shell_word(aside)}) and "
                   + then.format(aside=shell_word(aside)))


def is_finished(run_dir: str | Path, epochs: int | None = None) -> bool:
    """Whether ``last.pt`` of a run folder holds its final epoch (the checkpoint's configured
    ``epochs``, or ``epochs`` if given). Nothing but the checkpoint is trusted."""
    summary = run_summary(run_dir)
    if summary is None:
        return False
    return summary["epoch"] >= (epochs or summary["config"]["epochs"])


def trained_with(summary: dict) -> dict[str, str]:
    """How a run was trained (``summary``: :func:`run_summary`), in words, one entry per field of
    :data:`lab2.config.RECIPE_FIELDS` and one for the ``precision`` it computed in (fp32, bf16,
    fp16: what ``--amp`` resolved to on its machine, which changes the numbers): the value, or,
    where a resume changed it, each value with the epochs it held for (``0.001 (epochs 1–10),
    0.0001 (epochs 11–15)``). ``epochs`` is the number of epochs trained: extending a run changes
    nothing in the epochs before, so a run trained for 10 and then on to 15 counts as a 15-epoch
    run. A run saved before lab2 recorded its precision has ``not recorded``."""
    epochs = summary["epoch"]
    final = {**{name: summary["config"][name] for name in RECIPE_FIELDS},
             "precision": summary.get("precision") or "not recorded", "epochs": epochs}
    changes = summary.get("changes") or []
    words = {}
    for name, last_value in final.items():
        steps = [c for c in changes if c["field"] == name]
        if name == "epochs" or not steps:
            words[name] = shown(last_value)
            continue
        spans, first, value = [], 1, steps[0]["from"]
        for change in steps:          # a change at epoch e holds from epoch e + 1 on
            spans.append((first, change["epoch"], value))
            first, value = change["epoch"] + 1, change["to"]
        spans.append((first, epochs, value))
        spans = [span for span in spans if span[0] <= span[1]]      # no epoch trained with it
        merged: list[list] = []
        for first, last, value in spans:
            if merged and shown(merged[-1][2]) == shown(value):
                merged[-1][1] = last
            else:
                merged.append([first, last, value])
        if len(merged) <= 1:
            words[name] = shown(merged[0][2] if merged else last_value)
        else:
            words[name] = ", ".join(f"{shown(value)} ({_epochs(first, last)})"
                                    for first, last, value in merged)
    return words


def _epochs(first: int, last: int) -> str:
    return f"epoch {first}" if first == last else f"epochs {first}–{last}"


__all__ = ["HISTORY_FIELDS", "ROLE_FIELDS", "RUN_FILES", "WrongRun", "check_role",
           "check_same_data", "describe_role", "device_name", "folder_role", "git_commit",
           "is_finished", "no_run_to_resume", "other_data", "read_history", "reconcile_run",
           "resume_changes", "role_of", "run_summary", "saved_config", "saved_run", "trained_with",
           "write_history", "write_run_record"]
