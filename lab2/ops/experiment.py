"""The report's experiment: UNet and ResNet34-UNet, each without and with preprocessing, trained,
tested by Dice, and tabulated beside the report's numbers (its Table 1).

An experiment folder holds one run folder per model and seed (``unet_raw``, ``unet_preprocessed``,
… for seed 0; ``unet_raw_seed1`` … for the others), ``results.json`` (every number, typed: what the
notebooks read), and for people ``results.csv`` (one row per run), ``results.md`` (Table 1 and the
paired comparisons), ``comparisons.csv`` (:mod:`lab2.ops.comparisons`) and ``histories.csv`` (every
epoch of every run, for the loss curves), and ``experiment.json`` (the data set and profile the
folder belongs to). Finished runs are skipped and an interrupted one resumes, so the command can
simply be run again.

What makes a row of Table 1 trustworthy — a run finished only when its ``last.pt`` says so, test
metrics reused only for the same weights, data and settings, ``results.json`` checked against its
runs whenever it is read (:func:`load_experiment`), every run folder holding the run its row
needs, one data set and profile per folder, runs not trained alike named at the top of the table,
one process per folder — is listed, fault by fault, in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..config import RECIPE_FIELDS, TrainConfig, profile_config, run_name, shown
from ..stats import ALPHA, N_RESAMPLES, mean_and_std, smallest_p
from . import atomic, locks
from .atomic import file_digest, read_exact
from .audit import audit_dataset, refuse_leaks
from .comparisons import COMPARISON_FIELDS, compare
from .console import QUIET_INTERRUPT_ENV, one_line_warnings, shell_word
from .evaluation import evaluate_checkpoint, per_image_path, read_per_image
from .fingerprint import dataset_fingerprint, same_data
from .loaders import RUNS_AT_ONCE_ENV
from .machine import resolve_profile
from .notices import SkippedFilesWarning
from .paths import default_data_root, runs_dir
from .processes import die_with_parent, signal_name
from .runs import (
    check_role,
    check_same_data,
    git_commit,
    read_history,
    reconcile_run,
    resume_changes,
    run_summary,
    short_commit,
    trained_with,
)
from .sample import dataset_label, is_sample
from .trainer import train

log = logging.getLogger(__name__)

#: The report's test average Dice (docs/report.md, "Reported results").
REPORTED_DICE = {
    ("unet", False): 0.8887, ("unet", True): 0.8945,
    ("resnet34_unet", False): 0.9319, ("resnet34_unet", True): 0.9359,
}
RUNS = tuple(REPORTED_DICE)
#: Columns of ``results.csv``: one row per run (network, preprocessing, seed).
RESULT_FIELDS = ("run", "model", "preprocess", "seed", "dice", "dice_pooled", "dice_per_batch",
                 "dice_original", "dice_pooled_original", "boundary_iou", "background_fpr",
                 "reported_dice", "n_test", "epochs", "best_epoch", "best_val_dice",
                 "dropout_kind", "precision", "image_size", "profile", "data")
#: Test measures averaged over seeds in Table 1 (mean and standard deviation of each).
TABLE_MEASURES = ("dice", "dice_pooled", "dice_per_batch", "dice_original",
                  "dice_pooled_original", "boundary_iou", "background_fpr")
#: Version of ``results.json``'s layout. 2: each run's evaluation key and per-image file hash;
#: 3: how each run was trained (``trained_with``), the settings the runs differ in, and the
#: SHA-256 of each table written for people beside it (``files``); 4: each comparison's p-value
#: and Holm-adjusted p-value, the verdicts held to the family's 5 %, and with several seeds
#: intervals that resample the seeds too.
RESULTS_VERSION = 4


def default_out(profile: str, root) -> Path:
    return runs_dir() / f"{profile}-{'sample' if is_sample(root) else 'real'}"


def _check_folder_data(out: Path, root, profile: str) -> None:
    """Record (first time) or check (later) which data set and profile ``out`` belongs to."""
    record = {"dataset_fingerprint": dataset_fingerprint(root), "data": dataset_label(root),
              "root": str(root), "profile": profile}
    path = out / "experiment.json"
    if not path.is_file():
        atomic.write_json(path, record)
        return
    stored = atomic.read_json(path, "delete it and run the command again: it is written anew, "
                                    "and each run's own data set and profile are checked still")
    if not isinstance(stored, dict):
        raise atomic.DamagedRecord(f"{path} is damaged (not lab2's record of the folder); delete "
                                   "it and run the command again: it is written anew")
    recorded = stored.get("dataset_fingerprint")
    if not same_data(recorded, record["dataset_fingerprint"], root):
        raise ValueError(
            f"{out} holds runs of the {stored.get('data')} in {stored.get('root')} (fingerprint "
            f"{recorded}), not of the {record['data']} in {record['root']} (fingerprint "
            f"{record['dataset_fingerprint']}: another data set, or files of it changed since); "
            "use another --out for this data set")
    if stored.get("profile") != profile:
        raise ValueError(f"{out} holds runs of profile {stored.get('profile')!r}, not {profile!r};"
                         " use another --out, or the same --profile")
    if recorded != record["dataset_fingerprint"]:
        # recorded by names and sizes (the earlier lab2): by content from now on
        atomic.write_json(path, {**stored, "dataset_fingerprint": record["dataset_fingerprint"]})


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
    resume_changes(config, saved, fix=f"{run_dir} holds a run with the former; use another "
                   "--out for an experiment with the new settings")   # raises if it cannot change
    return config


def run_experiment(profile: str | None = None, root=None, out=None, *, progress: bool = True,
                   runs=RUNS, seeds: Sequence[int] = (0,), parallel: int = 0,
                   gpus: Sequence[int] | None = None, ddp: int = 0, **overrides
                   ) -> tuple[list[dict], Path]:
    """Train (or resume, or skip) and test each run, once per seed; write the tables; return
    Table 1's rows (one per network and preprocessing, averaged over the seeds) and the
    experiment folder. Seed 0 runs in ``unet_raw`` and so on, seed k in ``unet_raw_seed<k>``.
    ``overrides`` set single TrainConfig fields: for runs not started yet, and as changes
    (:data:`lab2.config.RESUMABLE_FIELDS` only) for runs that exist.

    ``parallel`` > 1 (or ``gpus``) trains the runs that need it at the same time, one worker
    process per GPU (``gpus``, default the first ``parallel`` visible ones; the runs queue when
    there are more runs than GPUs) or, without CUDA, ``parallel`` CPU processes sharing the cores;
    the tables are then written as by a sequential experiment (:func:`_train_in_parallel`).

    ``ddp`` = N trains each run that needs it on N processes through torchrun
    (DistributedDataParallel, :func:`_train_with_torchrun`), one run after the other."""
    name, root, seeds = settle(profile, root, seeds)
    if "seed" in overrides:
        raise ValueError("give the experiment's seeds with --seeds, not --seed")
    if ddp and (parallel or gpus):
        raise ValueError("--ddp trains each run on several processes and --parallel several runs "
                         "at once; pass one")
    out = Path(out) if out is not None else default_out(name, root)
    # every run's settings before any trains: an --image-size that suits UNet (a multiple of
    # 16) but not ResNet34-UNet (of 32) used to fail after the UNet runs had trained; and every
    # existing run folder holds the run its row needs
    for *_, wanted, run_dir in _planned(name, out, runs, seeds, overrides):
        check_role(run_dir, (run_summary(run_dir) or {}).get("config"), wanted)
    with open_folder(out, "experiment", root, name, progress):
        if parallel > 1 or gpus:
            _train_in_parallel(name, root, out, runs, seeds, overrides, parallel, gpus,
                               progress)
        if ddp:
            _train_with_torchrun(name, root, out, runs, seeds, overrides, ddp, progress)
        return _run_all(name, root, out, progress, runs, seeds, overrides)


def settle(profile: str | None, root, seeds: Sequence[int]) -> tuple[str, Path, tuple[int, ...]]:
    """The profile resolved, the data root resolved once (every record and message names it so)
    and the seeds without repeats, for an experiment or a study."""
    root = Path(root if root is not None else default_data_root()).expanduser().resolve()
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    return resolve_profile(profile), root, seeds


@contextlib.contextmanager
def open_folder(out: Path, what: str, root: Path, profile: str, progress: bool):
    """Own the folder of an experiment (or study), check it belongs to this data set and profile,
    and refuse splits that leak test images into training (finished runs too)."""
    with locks.own_folder(out, f"{what} folder"):
        _check_folder_data(out, root, profile)
        refuse_leaks(audit_dataset(root, progress=progress), root)
        yield


def train_and_test(run_dir: Path, wanted: TrainConfig, overrides: dict, fingerprint: str, root,
                   progress: bool) -> tuple[dict, TrainConfig, dict, dict]:
    """Train the run in ``run_dir`` (or resume it, or skip it when finished) and test its
    ``best.pt``, holding the folder's lock: what its last.pt says, the config it ran with, the
    test metrics and the per-image measures (read while the folder is ours: the file these
    metrics summarise, not one that an evaluate command writes a moment later)."""
    with locks.own_folder(run_dir):
        summary, config = _current(run_dir, wanted, overrides, fingerprint, root)
        if summary is not None and summary["epoch"] >= config.epochs:
            log.info("%s: finished earlier (last.pt holds epoch %d), skipping training",
                     run_dir.name, summary["epoch"])
            _warn_unapplied(config, summary)
            summary = reconcile_run(run_dir)
        else:
            train(config, root, run_dir, resume=summary is not None, progress=progress)
            summary = run_summary(run_dir)
        metrics = evaluate_checkpoint(run_dir / "best.pt", root, "test", progress=progress,
                                      reuse=True)
        return summary, config, metrics, read_per_image(run_dir)


def _run_all(name: str, root, out: Path, progress: bool, runs, seeds: tuple[int, ...],
             overrides: dict) -> tuple[list[dict], Path]:
    label = dataset_label(root)
    fingerprint = dataset_fingerprint(root)
    rows, histories = [], []
    per_image: dict[tuple, list] = {run: [] for run in runs}
    for seed, model, preprocess, wanted, run_dir in _planned(name, out, runs, seeds, overrides):
        summary, config, metrics, measures = train_and_test(run_dir, wanted, overrides,
                                                            fingerprint, root, progress)
        per_image[(model, preprocess)].append(measures)
        how = trained_with(summary)
        histories += [{"run": config.run_name, "model": model, "preprocess": preprocess,
                       "seed": seed, **h} for h in summary["history"]]
        rows.append({
            "run": run_dir.name, "model": model, "preprocess": preprocess, "seed": seed,
            "input": config.input,
            **{m: metrics[m] for m in TABLE_MEASURES},
            "reported_dice": REPORTED_DICE[(model, preprocess)],
            "n_test": metrics["n_images"], "epochs": summary["epoch"],
            "best_epoch": metrics["epoch"], "best_val_dice": summary["best_dice"],
            "dropout_kind": config.dropout_kind,
            "image_size": config.image_size, "profile": name, "data": label,
            "trained_with": how, "precision": how["precision"],
            # what the row belongs to: checked whenever results.json is read (load_experiment)
            "evaluation_key": metrics["key"], "per_image_sha256": metrics["per_image_sha256"],
        })
    table = table_rows(rows)
    comparisons = compare(per_image, REPORTED_DICE)
    differences = training_differences(rows)
    if differences:
        log.warning("the runs of %s were not all trained the same way (%s); Table 1 says so at "
                    "its top; for a fair comparison, train them alike in another --out", out,
                    "; ".join(differences.values()))
    write_tables(out, rows, table, comparisons, histories, name, label, seeds, differences)
    return table, out


def _warn_unapplied(config: TrainConfig, summary: dict) -> None:
    """Say which settings given for a finished run it was not trained with: it has no epoch
    left to train, so they change nothing in it (``--epochs`` above its epochs would)."""
    saved = TrainConfig.from_dict(summary["config"])
    unapplied = [f"{name} {shown(new)} (it was trained with {shown(old)})"
                 for name, (old, new) in resume_changes(config, saved).items()
                 if name in RECIPE_FIELDS and name != "epochs"]
    if config.epochs < summary["epoch"]:
        unapplied.append(f"epochs {config.epochs} (it has trained {summary['epoch']})")
    if unapplied:
        log.warning("%s is finished: not applied to it: %s; to train it with them, use another "
                    "--out", config.run_name, ", ".join(unapplied))


def training_differences(rows: list[dict]) -> dict[str, str]:
    """The training settings (and precisions) in which the runs of a table differ, each with a
    line that says how (``lr`` → ``lr: 0.001 in unet_raw, unet_preprocessed; 0.01 in
    resnet34_unet_raw``), from each row's ``trained_with`` (:func:`lab2.ops.runs.trained_with`);
    empty when all were trained alike.

    The runs of one experiment folder start with the same settings, but a run may be resumed
    with a new ``--lr``, ``--batch-size`` or ``--epochs`` while the others are finished, and a
    later ``--seeds`` adds runs with the settings of that command."""
    lines = {}
    for name in dict.fromkeys(name for row in rows for name in row["trained_with"]):
        groups: dict[str, list[str]] = {}
        for row in rows:
            groups.setdefault(row["trained_with"].get(name, "not recorded"), []).append(row["run"])
        if len(groups) > 1:
            lines[name] = f"{name}: " + "; ".join(f"{words} in {', '.join(runs)}"
                                                  for words, runs in groups.items())
    return lines


def _planned(name: str, out: Path, runs, seeds, overrides: dict):
    """(seed, network, preprocessing, wanted config, run folder) of every run, in order."""
    for seed in seeds:
        for model, preprocess in runs:
            wanted = profile_config(name, model=model, preprocess=preprocess, seed=seed,
                                    **overrides)
            yield seed, model, preprocess, wanted, out / wanted.run_name


def _current(run_dir: Path, wanted: TrainConfig, overrides: dict, fingerprint: str, root
             ) -> tuple[dict | None, TrainConfig]:
    """What ``last.pt`` of a run says, and the config the run continues with (hold its lock)."""
    summary = run_summary(run_dir)
    check_role(run_dir, summary and summary["config"], wanted)
    config = _run_config(run_dir, summary, wanted, overrides)
    if summary is not None:
        check_same_data(run_dir, summary["data"], fingerprint, root)
    return summary, config


def _pending(name: str, root, out: Path, runs, seeds, overrides: dict) -> list[tuple]:
    """(config, run folder, resume) of every run that still has epochs to train."""
    fingerprint = dataset_fingerprint(root)
    todo = []
    for *_, wanted, run_dir in _planned(name, out, runs, seeds, overrides):
        with locks.own_folder(run_dir):
            summary, config = _current(run_dir, wanted, overrides, fingerprint, root)
        if summary is None or summary["epoch"] < config.epochs:
            todo.append((config, run_dir, summary is not None))
    return todo


def _train_run(config: dict, root, run_dir: str, resume: bool, gpu: int | None, threads: int,
               report, runs_at_once: int = 1) -> None:
    """One run of a parallel experiment, in its own spawned process, on GPU ``gpu`` (None: the
    CPU, ``threads`` of its cores), one of ``runs_at_once`` sharing the machine; quiet. Sends
    ``None`` or the error's one line through ``report``. Ctrl-C goes to the parent alone, which
    stops this process (the run keeps its last completed epoch)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[RUNS_AT_ONCE_ENV] = str(runs_at_once)     # they share the shared memory
    # the parent's terminate() ends the run as a normal exit: the run folder's lock released
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    die_with_parent()
    one_line_warnings()
    warnings.simplefilter("ignore", SkippedFilesWarning)      # the experiment says it once
    import threading

    import torch
    from tqdm.std import tqdm
    # a thread lock for tqdm, which would otherwise create a multiprocessing lock: that is a
    # semaphore the resource tracker reports as leaked when this process is killed
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    try:
        if gpu is not None:
            torch.cuda.set_device(gpu)        # "cuda" in the config means this GPU
        train(TrainConfig.from_dict(config), root, Path(run_dir), resume=resume, progress=False)
        report.send(None)
    except Exception as e:
        report.send(" ".join(str(e).split()) or type(e).__name__)
    finally:
        # the run is over and reported: a terminate() now (a Ctrl-C as this process exits) has
        # nothing to stop, and its SystemExit would only print a traceback from an exit handler
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _outcome(process, receive) -> str | None:
    """How a run's process ended, once it has: None if it reported success, else one line — the
    error it reported, or, when it ended without a word (killed, say, by the system's
    out-of-memory killer), its exit code or signal."""
    try:
        if receive.poll():
            return receive.recv()
    except (EOFError, OSError):       # the pipe closed with nothing in it
        pass
    code = process.exitcode
    if code is not None and code < 0:
        name = signal_name(code)
        why = (" (the system's out-of-memory killer does this when memory runs out: try fewer "
               "--parallel processes)" if name == "SIGKILL" else "")
        return f"the process was killed by {name}{why}"
    return f"the process ended with exit code {code} without reporting"


def _check_gpus(gpus: Sequence[int]) -> None:
    """``--gpus`` names GPUs this machine has (before any process starts)."""
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    asked = f"--gpus {','.join(map(str, gpus))}"
    if not count:
        raise ValueError(f"{asked}: no CUDA device here; --parallel N trains N runs at once on "
                         "the CPU")
    if max(gpus) >= count:
        raise ValueError(f"{asked}: this machine has {count} GPU(s), numbered 0 to {count - 1} "
                         "(after CUDA_VISIBLE_DEVICES)")


def _start_ignoring_ctrl_c(process) -> None:
    """Start a child that ignores SIGINT from its first instruction: an ignored signal stays
    ignored across exec, and Python then installs no KeyboardInterrupt handler, so a Ctrl-C
    while the child is still importing cannot print a traceback."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        process.start()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)


#: Seconds between two looks at the runs' histories, for the bar of a parallel experiment.
PROGRESS_INTERVAL_S = 2.0


def _epochs_trained(run_dir: Path) -> int:
    """Epochs ``run_dir``'s history.csv holds (0 before the first, or while it cannot be read)."""
    try:
        return len(read_history(run_dir / "history.csv"))
    except (OSError, ValueError, KeyError):
        return 0


def _train_in_parallel(name: str, root, out: Path, runs, seeds, overrides: dict, parallel: int,
                       gpus: Sequence[int] | None, progress: bool = True) -> None:
    """Train the pending runs at the same time, each in its own spawned process: one per GPU
    (or per share of the CPU cores) at a time, every run in its own folder and resumable as in a
    sequential experiment. A failed run does not stop the others; the failures are raised
    together, in one line, once every run has ended. Plain processes and pipes, no shared
    queues: a Ctrl-C terminates the children and leaves nothing behind. The runs are quiet; one
    bar counts the epochs they have trained together (read from their histories)."""
    import multiprocessing
    from multiprocessing.connection import wait

    import torch
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .processes import cores_each
    todo = _pending(name, root, out, runs, seeds, overrides)
    if not todo:
        return
    if gpus is not None:
        _check_gpus(gpus)
    elif torch.cuda.is_available():
        gpus = list(range(min(parallel, torch.cuda.device_count())))
    workers = min(len(gpus) if gpus else parallel, len(todo))
    free = list(gpus[:workers]) if gpus else [None] * workers     # one run per slot at a time
    threads = 1 if gpus else cores_each(workers)
    where = (f"GPUs {', '.join(map(str, gpus[:workers]))}" if gpus else
             f"{workers} CPU processes of {threads} thread(s)")
    log.info("training %d runs on %s", len(todo), where)
    context = multiprocessing.get_context("spawn")
    queue, running, failures, done = list(todo), {}, [], 0

    def trained() -> int:
        return sum(_epochs_trained(run_dir) for _, run_dir, _ in todo)
    with tqdm(total=sum(config.epochs for config, *_ in todo), initial=trained(), unit="epoch",
              desc=f"{len(todo)} runs", disable=not progress) as bar, \
            logging_redirect_tqdm(loggers=[logging.root]):     # lab2's lines above the bar
        try:
            while queue or running:
                while queue and free:
                    config, run_dir, resume = queue.pop(0)
                    slot = free.pop(0)
                    receive, send = context.Pipe(duplex=False)
                    process = context.Process(
                        target=_train_run, name=f"lab2 {run_dir.name}",
                        args=(config.to_dict(), root, str(run_dir), resume, slot, threads, send),
                        kwargs={"runs_at_once": workers})
                    _start_ignoring_ctrl_c(process)
                    send.close()
                    running[process.sentinel] = (process, receive, run_dir, slot)
                ended = wait(list(running), timeout=PROGRESS_INTERVAL_S)
                bar.update(trained() - bar.n)
                for sentinel in ended:
                    process, receive, run_dir, slot = running.pop(sentinel)
                    process.join()
                    free.append(slot)
                    done += 1
                    error = _outcome(process, receive)
                    receive.close()
                    if error is None:
                        log.info("%s trained (%d/%d)", run_dir.name, done, len(todo))
                    else:
                        failures.append(f"{run_dir.name}: {error}")
        except BaseException:        # Ctrl-C (the children ignore it): stop them, keep what's saved
            for process, *_ in running.values():
                process.terminate()
            for process, *_ in running.values():
                process.join()
            raise
    if failures:
        raise RuntimeError("parallel training failed for " + "; ".join(failures) +
                           "; run the same command again to resume")


def _train_with_torchrun(name: str, root, out: Path, runs, seeds, overrides: dict, nproc: int,
                         progress: bool = True) -> None:
    """Train the pending runs one after the other, each on ``nproc`` processes through torchrun
    (:mod:`lab2.ops.distributed`): ``python -m lab2 train --config`` with the run's config, resumed
    when the run has epochs already. The ranks print their own one-line errors; a failure stops
    the experiment here, the run resumable by the same command. A Ctrl-C stops torchrun, which
    stops its ranks."""
    import subprocess
    import tempfile

    from .distributed import torchrun_command
    from .machine import resolve_device
    from .processes import cores_each
    todo = _pending(name, root, out, runs, seeds, overrides)
    if not todo:
        return
    if resolve_device(todo[0][0].device).type == "cuda":
        import torch
        if torch.cuda.device_count() < nproc:
            raise ValueError(f"--ddp {nproc} needs {nproc} GPUs; this machine has "
                             f"{torch.cuda.device_count()}. Use --ddp "
                             f"{torch.cuda.device_count()} or --device cpu")
    env = {**os.environ, QUIET_INTERRUPT_ENV: "1"}      # a Ctrl-C is told once, below
    env.setdefault("OMP_NUM_THREADS", str(cores_each(nproc)))
    if not progress:
        env["TQDM_DISABLE"] = "1"             # tqdm's own switch, read by every bar
    with tempfile.TemporaryDirectory(prefix="lab2-ddp-") as folder:
        for done, (config, run_dir, resume) in enumerate(todo):
            log.info("%s on %d processes through torchrun (%d/%d)", run_dir.name, nproc,
                     done + 1, len(todo))
            config_file = Path(folder) / f"{run_dir.name}.json"
            atomic.write_json(config_file, config.to_dict())
            command = torchrun_command(nproc, ["train", "--root", str(root), "--out",
                                               str(run_dir), "--config", str(config_file),
                                               *(["--resume"] if resume else [])])
            # its own session: a terminal's Ctrl-C reaches this process alone, which passes it on
            # once (twice would cut torchrun's own shutdown of the ranks short)
            process = subprocess.Popen(command, env=env, start_new_session=True)
            try:
                code = process.wait()
            except BaseException:        # Ctrl-C: torchrun stops its ranks; wait for that
                # (Windows can send no SIGINT to a child: terminate it; the ranks watch it)
                if sys.platform == "win32":
                    process.terminate()
                else:
                    process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
            if code != 0:
                raise RuntimeError(f"{run_dir.name} stopped on {nproc} processes (exit code "
                                   f"{code}; its message is above); run the same command again "
                                   "to resume it")


def table_rows(rows: list[dict]) -> list[dict]:
    """Table 1: one row per network and preprocessing, each test measure's mean over the seeds
    (``<measure>``) and standard deviation (``<measure>_std``)."""
    table = []
    for key in dict.fromkeys((r["model"], r["preprocess"]) for r in rows):
        runs = [r for r in rows if (r["model"], r["preprocess"]) == key]
        entry = {"model": key[0], "preprocess": key[1], "n_seeds": len(runs),
                 "seeds": [r["seed"] for r in runs]}
        for measure in TABLE_MEASURES:
            entry[measure], entry[f"{measure}_std"] = mean_and_std([r[measure] for r in runs])
        first = runs[0]
        entry.update(reported_dice=first["reported_dice"], n_test=first["n_test"],
                     epochs=min(r["epochs"] for r in runs),
                     best_epoch=first["best_epoch"],          # of the first seed's run
                     best_val_dice=mean_and_std([r["best_val_dice"] for r in runs])[0],
                     dropout_kind="/".join(sorted({r.get("dropout_kind", "?") for r in runs})),
                     precision="/".join(sorted({r.get("precision", "?") for r in runs})),
                     image_size=first["image_size"], profile=first["profile"],
                     data=first["data"])
        table.append(entry)
    return table


def _spread(row: dict, measure: str) -> str:
    text = f"{row[measure]:.4f}"
    return text + (f" ± {row[measure + '_std']:.4f}" if row["n_seeds"] > 1 else "")


def results_markdown(table: list[dict], comparisons: list[dict], profile: str, label: str,
                     seeds: Sequence[int] = (0,), differences: dict[str, str] | None = None
                     ) -> str:
    """Table 1 (lab2's test Dice beside the report's) and the paired comparisons; first, in
    bold, the training settings the runs differ in (:func:`training_differences`), if any."""
    synthetic = label == "synthetic sample"
    lines = [
        f"# Table 1 — test Dice ({label}, profile `{profile}`)",
        "",
        f"Written by `python -m lab2 experiment` on {dt.date.today().isoformat()}, "
        f"code {short_commit(git_commit())}.",
        "",
    ]
    if synthetic:
        lines += ["**SYNTHETIC SAMPLE** — these numbers come from lab2's generated sample, not "
                  "from Oxford-IIIT Pet; they cannot be compared with the report's column.", ""]
    if profile != "full":
        lines += [f"Profile `{profile}` is smaller than the report's setup (512 px, 50 epochs, "
                  "full-width networks).", ""]
    if differences:
        lines += ["**NOT TRAINED ALIKE** — the runs below differ in training settings, so a "
                  "difference between them may come from these settings rather than from the "
                  "network or the preprocessing:", "",
                  *(f"- {line}" for line in differences.values()), ""]
    several = len(seeds) > 1
    lines += [(f"Each model trained with seeds {', '.join(map(str, seeds))}: mean ± standard "
               "deviation over the seeds." if several else
               f"One training run per model (seed {seeds[0]}): the spread between seeds is not "
               "measured; `--seeds 0 1 2` measures it."), ""]
    lines += ["| model | preprocessing | average Dice | pooled Dice | per-batch Dice | average "
              "Dice, original size | Boundary IoU | background false positives | report's "
              "average Dice | test images | epochs | dropout | precision |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['model']} | {'yes' if r['preprocess'] else 'no'} | {_spread(r, 'dice')} | "
            f"{_spread(r, 'dice_pooled')} | {_spread(r, 'dice_per_batch')} | "
            f"{_spread(r, 'dice_original')} | {_spread(r, 'boundary_iou')} | "
            f"{_spread(r, 'background_fpr')} | {r['reported_dice']:.4f} | {r['n_test']} | "
            f"{r['epochs']} | {r['dropout_kind']} | {r['precision']} |")
    lines += ["", f"Average Dice = mean of per-image foreground Dice at the training size "
              f"({table[0]['image_size']} px); pooled = one Dice over all test pixels; per-batch "
              "= mean over consecutive batches of 8 test images of each batch's pooled Dice. "
              "Original size: logits resized back to each photo, where Boundary IoU (band of 2 % "
              "of the diagonal) and the share of background pixels called pet are measured too. "
              "Dropout: element = nn.Dropout (the report's), channel = nn.Dropout2d. Precision: "
              "what the run computed in (bf16 or fp16 autocast, or fp32: `--amp`, whose `auto` "
              "chooses by machine); the same settings in another precision give other numbers."]
    if comparisons:
        lines += ["", "## Paired comparisons (difference b − a, 95 % bootstrap interval over "
                  f"test images{' and seeds' if several else ''})", "",
                  (f"Per image, each model's value averaged over its seeds; each of the "
                   f"{N_RESAMPLES:,} resamples draws the test images and each model's seeds "
                   "with replacement, so the interval covers the seed-to-seed spread as well as "
                   "the choice of test images." if several else
                   "One seed per model: the interval covers the choice of test images only, not "
                   "the seed-to-seed spread."),
                  f"A verdict says \"better\" only when the interval excludes 0 and the "
                  f"Holm-adjusted p-value over all {len(comparisons)} comparisons of this table "
                  f"is below {ALPHA:g}: each interval alone is a 95 % one, and with "
                  f"{len(comparisons)} of them, models that do not differ at all would often show "
                  "one \"difference\" by chance. p: twice the share of the resampled mean "
                  f"differences on the far side of 0 (never below {smallest_p():.4f}, the "
                  f"least {N_RESAMPLES:,} resamples can show).", "",
                  "| comparison | a | b | images | seeds | b − a | 95 % interval | p | Holm p | "
                  "verdict | report's b − a |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in comparisons:
            reported = ("" if c["reported_difference"] is None
                        else f"{c['reported_difference']:+.4f}")
            lines.append(f"| {c['comparison']} | {c['model_a']} | {c['model_b']} | "
                         f"{c['n_images']} | {c['n_seeds']} | {c['mean_difference']:+.4f} | "
                         f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | {c['p_value']:.4f} | "
                         f"{c['p_holm']:.4f} | {c['verdict']} | {reported} |")
    return "\n".join(lines) + "\n"


HISTORY_FIELDS = ("run", "model", "preprocess", "seed", "epoch", "train_loss", "val_loss",
                  "val_dice", "val_dice_pooled", "lr", "seconds")


def write_tables(out: Path, rows: list[dict], table: list[dict], comparisons: list[dict],
                 histories: list[dict], profile: str, label: str, seeds: Sequence[int],
                 differences: dict[str, str] | None = None) -> None:
    """``results.json`` (everything, typed: what code reads) and, for people, ``results.csv``
    (one row per run), ``results.md`` (Table 1 and the comparisons), ``comparisons.csv`` and
    ``histories.csv``. ``results.json`` comes last and names the SHA-256 of each of the others:
    a kill between the writes leaves tables that :func:`out_of_date` tells from the ones it
    was written with (notebook 04 shows ``results.md`` beside figures drawn from the JSON)."""
    # each row says which data and profile it comes from, as results.csv's do: a CSV copied
    # into a spreadsheet or a thesis keeps "synthetic sample" with its numbers
    tag = {"profile": profile, "data": label}
    files = atomic.write_texts(out, {
        "results.csv": atomic.csv_text(rows, RESULT_FIELDS),
        "comparisons.csv": atomic.csv_text([{**c, **tag} for c in comparisons],
                                           (*COMPARISON_FIELDS, *tag)),
        "histories.csv": atomic.csv_text([{**h, **tag} for h in histories],
                                         (*HISTORY_FIELDS, *tag)),
        "results.md": results_markdown(table, comparisons, profile, label, seeds, differences)})
    atomic.write_json(out / "results.json", {
        "version": RESULTS_VERSION, "profile": profile, "data": label, "seeds": list(seeds),
        "date": dt.date.today().isoformat(), "git_commit": git_commit(), "files": files,
        "differences": differences or {},
        "table": table, "runs": rows, "comparisons": comparisons, "histories": histories})


class ResultsOutOfDate(ValueError):
    """``results.json`` no longer describes the run folders beside it."""


def load_experiment(out, root=None) -> dict:
    """Everything an experiment folder's ``results.json`` holds (typed), once it is checked to
    still describe the runs beside it (:func:`out_of_date`; ``root``: and the data set there),
    and under ``markdown`` the text of the ``results.md`` it was written with (read once).

    Raises :class:`ResultsOutOfDate` with the command that brings it up to date: a run trained
    further or again, or tested again with other settings, after the tables were written would
    otherwise show one run's Table 1 row beside another run's figures."""
    out = Path(out)
    path = out / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: run python -m lab2 experiment to write it")
    results = atomic.read_json(path, f"rewrite it with: {_refresh_command(out, {})}")
    try:
        why = out_of_date(out, results, root)
    except (KeyError, TypeError, AttributeError) as e:     # valid JSON, but not lab2's layout
        raise ResultsOutOfDate(f"{path} is damaged (no {e} where lab2 writes one); rewrite it "
                               f"with: {_refresh_command(out, {})}") from None
    if why is not None:
        raise ResultsOutOfDate(f"{path} is out of date: {why}; bring it up to date with: "
                               f"{_refresh_command(out, results)} (finished runs are only "
                               "tested, not trained again)")
    results["markdown"] = read_exact(out / "results.md",
                                     results["files"]["results.md"]).decode("utf-8")
    return results


def out_of_date(out: Path, results: dict, root=None) -> str | None:
    """Why ``results`` (``out``'s ``results.json``) does not describe its runs now, or None:
    the tables beside it still the ones it was written with (their SHA-256), each run's
    ``last.pt`` still at the epoch the row was made at, ``best.pt`` still the tested weights
    (content hash), the per-image file still the one tested (its hash), and, with ``root``, the
    data set there still the one tested."""
    if results.get("version") != RESULTS_VERSION:
        return "an older lab2 wrote it"
    for name, digest in results["files"].items():
        if not (out / name).is_file() or file_digest(out / name) != digest:
            return (f"{name} beside it is not the one it was written with (its writing was "
                    "interrupted, or the file was edited since)")
    fingerprint = dataset_fingerprint(root) if root is not None else None
    for row in results["runs"]:
        run_dir = out / run_name(row["model"], row["preprocess"], row["seed"],
                                 row.get("input", "rgb"))
        key = row["evaluation_key"]
        summary = run_summary(run_dir)
        # the run's own settings say what it is, whatever the table or the folder's name say:
        # refused here with the move that mends it (rewriting the tables would not)
        if summary is not None:
            check_role(run_dir, summary["config"], row,
                       then=f"run {_refresh_command(out, results)}, which trains the run that "
                            "belongs there and rewrites the tables")
        if row["run"] != run_dir.name:
            return f"its row for {run_dir.name} was made from the run in {row['run']}"
        if summary is None or not (run_dir / "best.pt").is_file():
            return f"{row['run']} has no last.pt or best.pt any more"
        if summary["epoch"] != row["epochs"]:
            return (f"{row['run']} was trained on after it (last.pt holds epoch "
                    f"{summary['epoch']}, the table epoch {row['epochs']})")
        if file_digest(run_dir / "best.pt") != key["checkpoint_sha256"]:
            return f"{row['run']}/best.pt is not the checkpoint it tested (trained again since?)"
        per_image = per_image_path(run_dir, "test")
        if not per_image.is_file() or file_digest(per_image) != row["per_image_sha256"]:
            return (f"{per_image.relative_to(out)} is not the file it was made from (tested "
                    "again with other settings since?)")
        if fingerprint is not None and not same_data(key["dataset_fingerprint"], fingerprint,
                                                     root):
            return (f"the data set in {root} has changed since (fingerprint {fingerprint}, "
                    f"tested on {key['dataset_fingerprint']})")
    return None


def _refresh_command(out: Path, results: dict) -> str:
    """The experiment command that rewrites ``out``'s tables from its runs."""
    try:
        folder = json.loads((out / "experiment.json").read_text(encoding="utf-8"))
        root, profile = folder["root"], folder["profile"]
    except (OSError, ValueError, KeyError):
        root, profile = None, results.get("profile")
    words = ["python", "-m", "lab2", "experiment"]
    if root is not None:
        words += ["--root", shell_word(root)]
    if profile:
        words += ["--profile", profile]
    words += ["--out", shell_word(str(out))]
    seeds = results.get("seeds") or _seeds_of_folders(out)
    if list(seeds) != [0]:
        words += ["--seeds", *map(str, seeds)]
    return " ".join(words)


def _seeds_of_folders(out: Path) -> list[int]:
    """The seeds whose run folders ``out`` holds (``unet_raw`` is seed 0, ``unet_raw_seed2``
    seed 2), for a command that rewrites tables whose own record of them is lost."""
    seeds = {0}
    for folder in out.glob("*_seed*"):
        seed = folder.name.rpartition("_seed")[2]
        if seed.isdigit() and folder.is_dir():
            seeds.add(int(seed))
    return sorted(seeds)


def load_results(out, root=None) -> tuple[list[dict], list[dict]]:
    """(Table 1 rows, history rows) of an experiment folder, from ``results.json`` (checked as
    :func:`load_experiment` does)."""
    results = load_experiment(out, root)
    return results["table"], results["histories"]


__all__ = ["REPORTED_DICE", "RUNS", "ResultsOutOfDate", "default_out", "load_experiment",
           "load_results", "out_of_date", "results_markdown", "run_experiment", "table_rows",
           "training_differences"]
