"""Command line: ``python -m lab2 <command>``; ``--help`` on each command says what it does."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import sys
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from ..config import (
    PROFILE_OVERRIDES,
    PROFILES,
    RESUMABLE_FIELDS,
    TrainConfig,
    field_choices,
    field_types,
    shown,
)
from . import atomic
from .console import EXPECTED_ERRORS, QUIET_INTERRUPT_ENV, one_line_warnings, printable_output
from .paths import CACHE_ENV, default_data_root, default_sample_root


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one clear line instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but an unknown option is told by the command it was given to (its
        ``--help``), with the nearest option it has: argparse told it at the top level, whose
        help lists only the commands."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = self._subcommands().get(getattr(parsed, "command", None), self)
            options = [o for action in command._actions for o in action.option_strings]
            near = [difflib.get_close_matches(a.split("=")[0], options, n=1, cutoff=0.6)
                    for a in extra if a.startswith("-")]
            hint = "".join(f"; did you mean {m[0]}?" for m in near if m)
            command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        return parsed

    def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
        return next((a.choices for a in self._actions
                     if isinstance(a, argparse._SubParsersAction)), {})


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def cmd_download(args: argparse.Namespace) -> int:
    from .download import download_oxford_pet
    folder = download_oxford_pet(args.root, mirror=args.mirror)
    print(f"Oxford-IIIT Pet is ready in {folder}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit_dataset
    report = audit_dataset(args.root, use_cache=not args.no_cache, workers=args.workers)
    print(report.table())
    if args.json:
        atomic.write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .sample import make_sample_dataset
    info = make_sample_dataset(args.root, seed=args.seed, n_trainval=args.n_trainval,
                               n_test=args.n_test, size=args.size, overwrite=args.overwrite)
    print(f"synthetic sample in {info.folder}: {info.n_trainval} trainval + {info.n_test} test "
          f"images (seed {info.seed}); planted problem files:")
    for file, (status, what) in sorted(info.planted.items()):
        print(f"  {file}: {what} -> {status}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from ..preprocess import PreprocessParams
    from .cache import build_cache
    cache = build_cache(args.root, args.image_size, None if args.no_chain else PreprocessParams(),
                        workers=args.workers)
    variant = "raw" if args.no_chain else "preprocessed"
    print(f"{variant} cache of {len(cache.names)} samples at {args.image_size}x{args.image_size}: "
          f"{cache.folder}")
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    """TrainConfig fields given on the command line (the rest come from the profile or, with
    --resume, from the run)."""
    given = {name: getattr(args, name) for name in args.config_fields}
    return {name: tuple(value) if isinstance(value, list) else value
            for name, value in given.items() if value is not None}


def _config_file(path: Path) -> TrainConfig:
    """A TrainConfig from a ``config.json`` (``train --config``), or a one-line error."""
    try:
        return TrainConfig.load(path)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"--config {path}: not a readable lab2 config.json ({_one_line(e)}); "
                         "point it at a run's config.json") from None


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import profile_config
    from .machine import resolve_profile
    from .runs import saved_run
    from .sample import dataset_label
    from .trainer import train
    if args.resume and args.restart:
        raise ValueError("--resume continues the run in --out and --restart deletes it; pass one")
    if args.config and args.profile:
        raise ValueError("--config gives every setting and --profile its own; pass one")
    overrides = _overrides(args)
    if args.resume:
        # the run's own settings, with only what was given on this command line changed
        summary = saved_run(args.out)      # last.pt read once
        if args.profile:
            overrides["profile"] = resolve_profile(args.profile)
        saved = (_config_file(args.config) if args.config else
                 TrainConfig.from_dict(summary["config"]))
        config = saved.replace(**overrides)
        root = args.root or _run_root(summary["data"])
    else:
        if args.config:
            config = _config_file(args.config).replace(**overrides)
        elif "model" not in overrides:
            raise ValueError("--model is required to start a run (unet or resnet34_unet)")
        else:
            config = profile_config(resolve_profile(args.profile), **overrides)
        root = args.root or default_data_root()
    result = train(config, root, args.out, resume=args.resume, restart=args.restart)
    if not _rank():
        print(f"{config.run_name}: best validation Dice {result['best_dice']:.4f} "
              f"({dataset_label(root)}); run in {args.out}")
    return 0


def _run_root(data: dict | None) -> str | Path:
    """The data root a run was trained on (``data``: what its checkpoint records), where this
    machine has that folder (a run folder copied from another machine records the other
    machine's path), else the default data root; the data set's fingerprint is checked after."""
    recorded = (data or {}).get("root")
    return recorded if recorded and Path(recorded).is_dir() else default_data_root()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .evaluation import format_metrics, measure_checkpoint, metrics_path, save_evaluation
    root = args.root or _run_root(load_checkpoint(args.checkpoint, mmap=True).get("data"))
    metrics, rows = measure_checkpoint(args.checkpoint, root, args.split,
                                       max_samples=None if args.all else -1)
    print(format_metrics(metrics), flush=True)   # before saving: a read-only folder loses nothing
    save_evaluation(args.checkpoint, metrics, rows)
    print(f"wrote {metrics_path(args.checkpoint)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import READABLE, gather_photos, predict_files
    out = args.out or Path(args.checkpoint).parent / "predictions"
    photos, problems = gather_photos(args.images)
    if not photos:
        raise ValueError(f"no photo to segment: {'; '.join(problems)}. {READABLE}")
    written, unreadable = predict_files(args.checkpoint, photos, out)
    problems += unreadable
    for image, mask, overlay in written:
        print(f"{image} -> {mask}, {overlay}")
    if problems:
        print(f"error: {len(problems)} of the inputs left out, the photos above segmented: "
              f"{'; '.join(problems)}. {READABLE}", file=sys.stderr)
        return 1
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from .choose import choose_data_root
    from .experiment import run_experiment
    overrides = _overrides(args)
    if "seed" in overrides:
        if args.seeds:
            raise ValueError("give the seeds with --seeds alone (--seed is one of them)")
        args.seeds = [overrides.pop("seed")]
    root = Path(args.root) if args.root else choose_data_root(try_download=False)
    if args.study:
        from .study import STUDY_SEEDS, run_study, study_markdown
        if args.parallel or args.gpus or args.ddp:
            raise ValueError("--study trains its runs one after the other; drop --parallel, "
                             "--gpus and --ddp")
        print(study_markdown(run_study(args.profile, root, args.out,
                                       seeds=args.seeds or STUDY_SEEDS, **overrides)))
        return 0
    _, out = run_experiment(args.profile, root, args.out, seeds=args.seeds or (0,),
                            parallel=args.parallel, gpus=args.gpus, ddp=args.ddp, **overrides)
    print((out / "results.md").read_text(encoding="utf-8"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The main job: the audit and the four-model experiment (auto profile), on the real data
    when present or downloadable, else on the synthetic sample; then the notebooks."""
    from .audit import audit_dataset
    from .choose import choose_data_root
    from .experiment import run_experiment
    from .machine import resolve_profile
    from .paths import check_outputs_writable, check_writable, notebooks_dir
    from .runner import notebook_environment, notebook_paths, run_notebooks
    check_outputs_writable(figures=not args.no_notebooks)     # before hours of work, not after
    if not args.no_notebooks and (notebook_folder := notebooks_dir()) is not None:
        check_writable(notebook_folder, "the notebooks are executed in place: copy the "
                       "project to a writable folder, or add --no-notebooks")
    root = choose_data_root(args.root, args.sample_root, try_download=not args.no_download)
    print(audit_dataset(root).table())
    profile = resolve_profile(args.profile)
    _, out = run_experiment(profile, root, parallel=args.parallel, gpus=args.gpus, ddp=args.ddp)
    print((out / "results.md").read_text(encoding="utf-8"))
    if args.no_notebooks:
        return 0
    notebooks = notebook_paths()
    if not notebooks:
        print("no notebooks here (an installed package); the results are in", out)
        return 0
    notebook_environment(profile, args.root, args.sample_root)
    run_notebooks(notebooks)
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    """Execute notebooks in place (what the end of `report` does with the report's four)."""
    from .runner import REPORT_NOTEBOOKS, notebook_paths, run_notebooks
    notebooks = notebook_paths(args.names or REPORT_NOTEBOOKS)
    if not notebooks:
        raise FileNotFoundError("no such notebook in notebooks/ (or no notebooks/ folder: run "
                                "this from a source checkout of lab2)")
    run_notebooks(notebooks)
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

def _at_least(kind: Callable[[str], float], minimum: float, why: str | None = None
              ) -> Callable[[str], float]:
    """An argparse type: ``kind(text)``, refused in one line below ``minimum``."""
    def parse(text: str) -> float:
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{why or f'must be at least {minimum:g}'}, "
                                             f"got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _positive(kind: Callable[[str], int]) -> Callable[[str], int]:
    """An integer argparse type above 0."""
    return _at_least(kind, 1, "must be positive")


def _profile_values(name: str) -> str:
    """``full 512, quick 128, smoke 64`` when the profiles differ in a field, else its default."""
    default = TrainConfig.__dataclass_fields__[name].default
    values = {p: PROFILE_OVERRIDES[p].get(name, default) for p in PROFILE_OVERRIDES}
    if len(set(map(shown, values.values()))) == 1:
        return f"default {shown(default)}"
    return ", ".join(f"{p} {shown(v)}" for p, v in values.items())


def _add_config_flags(p: argparse.ArgumentParser, *, per_run: bool) -> None:
    """``--profile`` and one flag per TrainConfig field (``per_run``: also the model and the
    preprocessing, which the experiment varies itself). Types, choices, bounds and help all come
    from :class:`lab2.config.TrainConfig`; every flag defaults to None = the profile's value."""
    p.add_argument("--profile", default=None, choices=PROFILES,
                   help="settings to start from (default: $LAB2_PROFILE or auto = full with "
                        "CUDA, quick without)")
    g = p.add_argument_group("TrainConfig fields (default: the profile's value, shown in "
                             "brackets; with --resume, the run's own)")
    names = []
    for f in dataclasses.fields(TrainConfig):
        if not f.metadata["flag"] or (f.metadata["per_run"] and not per_run):
            continue
        kind, choices = field_types(TrainConfig)[f.name], field_choices(f.name, TrainConfig)
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(k for k in typing.get_args(kind) if k is not type(None))  # int | None
        help_text = f"{f.metadata['help']} [{_profile_values(f.name)}]".replace("%", "%%")
        options = dict(dest=f.name, default=None, help=help_text)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif choices:
            options["choices"] = choices
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            options.update(nargs="+", type=item, metavar=item.__name__.upper())
        else:
            minimum = f.metadata["minimum"]
            options["type"] = kind if minimum is None else _at_least(kind, minimum)
        g.add_argument("--" + f.name.replace("_", "-"), **options)
        names.append(f.name)
    p.set_defaults(config_fields=tuple(names))


def _gpu_list(text: str) -> list[int]:
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU numbers like 0,1,2, got {text}") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct GPU numbers like 0,1,2, got {text}")
    return gpus


def _add_several_gpus(p: argparse.ArgumentParser) -> None:
    """How the experiment's runs use several GPUs (or CPU processes)."""
    p.add_argument("--parallel", type=_positive(int), default=0, metavar="N",
                   help="train up to N runs at the same time, one process per GPU (the first N "
                        "visible ones; runs queue when there are more runs than GPUs) or, "
                        "without CUDA, N processes sharing the CPU cores")
    p.add_argument("--gpus", type=_gpu_list, default=None, metavar="0,1,...",
                   help="the GPUs of --parallel, one run on each at a time")
    p.add_argument("--ddp", type=_positive(int), default=0, metavar="N",
                   help="train each run on N processes, one run after the other, through "
                        "torchrun (DistributedDataParallel: N GPUs, or N CPU processes with "
                        "--device cpu); --parallel is the better use of several GPUs for the "
                        "four runs, --ddp shortens each run")


def _add_root(p: argparse.ArgumentParser, default: str | None, what: str = "data root",
              cache: bool = True) -> None:
    p.add_argument("--root", default=default,
                   help=what if default is None else f"{what} (default {default})")
    if cache:
        p.add_argument("--cache-dir", type=Path, default=None,
                       help=f"where caches and the audit are kept (default ${CACHE_ENV} or "
                            "ROOT/cache); use it when the data root is read-only")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lab2", description="lab2: binary pet segmentation (UNet and "
                     "ResNet34-UNet) on Oxford-IIIT Pet. Each command has --help.")
    parser.add_argument("--version", action="version", version=f"lab2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND")
    real_root = str(default_data_root())
    sample_root = str(default_sample_root())

    p = sub.add_parser("download", help="fetch, verify and extract the Oxford-IIIT Pet archives",
                       description="Fetch images.tar.gz and annotations.tar.gz, check their md5, "
                                   "and extract them into ROOT/oxford-iiit-pet/. Resumes an "
                                   "interrupted transfer; does nothing if already done.")
    _add_root(p, real_root, cache=False)
    p.add_argument("--mirror", default=None,
                   help="base URL holding both archives (default: the official hosts; "
                        "also LAB2_PET_MIRROR)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("audit", help="scan the data set and report every problem file",
                       description="Classify every image and trimap as ok, recovered, skipped or "
                                   "ignored; print the problems as a table.")
    _add_root(p, real_root)
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.add_argument("--workers", type=_positive(int), default=None,
                   help="processes that decode images (default: all cores)")
    p.add_argument("--no-cache", action="store_true", help="audit again even if cached")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("sample", help="write the synthetic sample data set",
                       description="Write a small synthetic data set in the official layout, "
                                   "with planted problem files. Deterministic for a seed.")
    _add_root(p, sample_root, cache=False)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-trainval", type=_positive(int), default=400)
    p.add_argument("--n-test", type=_positive(int), default=100)
    p.add_argument("--size", type=_positive(int), default=256,
                   help="longest image side in pixels (sides vary from 0.625x to 1x this)")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if present")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("preprocess", help="build the resized (and preprocessed) sample cache",
                       description="Resize every usable sample to the training size, run the "
                                   "report's OpenCV chain unless --no-chain, and store the result "
                                   "in ROOT/cache/<fingerprint>/ for training to read.")
    _add_root(p, real_root)
    p.add_argument("--image-size", type=_positive(int), default=512, help="side in pixels (512)")
    p.add_argument("--no-chain", action="store_true",
                   help="store raw resized images (the 'no preprocessing' variant)")
    p.add_argument("--workers", type=_positive(int), default=None,
                   help="processes (default: all cores)")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train one model",
                       description="Train one network; history.csv, last.pt and best.pt are "
                                   "written after every epoch, so --resume continues an "
                                   "interrupted run.")
    _add_root(p, None, f"data root (default {real_root}; with --resume, the run's own, where "
                       "this machine has it)")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt with the run's own settings; of the flags "
                        f"below, {', '.join('--' + n.replace('_', '-') for n in RESUMABLE_FIELDS)}"
                        " change from the next epoch (kept in run.json); others are refused")
    p.add_argument("--restart", action="store_true",
                   help="delete the run in OUT and train it again from scratch")
    p.add_argument("--config", type=Path, default=None, metavar="CONFIG_JSON",
                   help="take every setting from this config.json (another run's, say) instead "
                        "of a profile; the flags below change it")
    _add_config_flags(p, per_run=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test a checkpoint (Dice at both resolutions)",
                       description="Print average (per-image) and pooled Dice at the training "
                                   "size and at each image's original size; write metrics.json "
                                   "beside the checkpoint.")
    p.add_argument("--checkpoint", required=True, type=Path)
    _add_root(p, None, f"data root (default: the one the run was trained on, if this machine has "
                       f"it, else {real_root})")
    p.add_argument("--split", default="test", choices=("train", "val", "trainval", "test"))
    p.add_argument("--all", action="store_true",
                   help="evaluate the whole split even if the run's profile used a subset")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="mask and overlay PNGs for any photos",
                       description="Segment any photos (any size) with a trained checkpoint; "
                       "a phone's photo is turned upright as its EXIF orientation says.")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("images", nargs="+", type=Path, metavar="PHOTO_OR_FOLDER",
                   help="photos in any format Pillow reads, or folders of them (their own files, "
                        "not subfolders); repeated names get -2, -3, ...; an input that gives no "
                        "photo, a folder's file named as a photo that is not one, and a photo "
                        "that cannot be decoded (cut short, too large) are named at the end "
                        "(exit code 1), the others are segmented")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: predictions/ beside the checkpoint)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("experiment", help="train and test the four models (the report's Table 1)",
                       description="Train and test UNet and ResNet34-UNet without and with "
                                   "preprocessing; skips finished runs, resumes an interrupted "
                                   "one; writes results.csv, results.md and histories.csv.")
    _add_root(p, None, "data root (default: the real set if present, else the sample)")
    p.add_argument("--out", type=Path, default=None,
                   help="experiment folder (default runs/<profile>-<real|sample>, and "
                        "runs/<profile>-<real|sample>-future-work for --study)")
    p.add_argument("--study", choices=("future-work",), default=None,
                   help="instead of the four models: the report's future work, measured: its "
                        "best model and one arm per proposal (LeViT-UNet, gray input, an edge "
                        "channel, twice the epochs), 3 seeds each unless --seeds says otherwise, "
                        "each arm against the best model with intervals (docs/statistics.md)")
    p.add_argument("--seeds", type=_at_least(int, 0), nargs="+", default=None, metavar="SEED",
                   help="train each model once per seed (default: 0, the report's single run); "
                        "seed k > 0 runs in <model>_<raw|preprocessed>_seed<k>. Several seeds "
                        "measure the seed-to-seed spread (Table 1's ±; the comparisons' "
                        "intervals resample the seeds too: docs/statistics.md) and multiply the "
                        "time")
    _add_several_gpus(p)
    _add_config_flags(p, per_run=False)
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("report", help="the main job (what `make report` runs)",
                       description="Audit the data, run the four-model experiment with the "
                                   "auto profile, on the real data set when present or "
                                   "downloadable, else on the synthetic sample (with a warning), "
                                   "then re-run the four notebooks so every figure regenerates.")
    _add_root(p, real_root, "real data root")
    p.add_argument("--sample-root", default=sample_root,
                   help="sample data root used when the real set is absent "
                        f"(default {sample_root})")
    p.add_argument("--profile", default=None, choices=PROFILES,
                   help="default: $LAB2_PROFILE or auto")
    p.add_argument("--no-download", action="store_true",
                   help="do not try to download the real data set")
    p.add_argument("--no-notebooks", action="store_true",
                   help="stop after the experiment (do not re-run the notebooks)")
    _add_several_gpus(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("notebooks", help="re-run the four notebooks in place",
                       description="Execute notebooks/01_... to 04_... top to bottom and save "
                                   "them with their new outputs and figures (the last step of "
                                   "`report`); or the notebooks named.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="notebooks to run instead, e.g. 05_future_work (after `experiment "
                        "--study future-work`)")
    p.set_defaults(func=cmd_notebooks)
    return parser


def _one_line(error: BaseException) -> str:
    """An error as one line; an OSError from outside lab2 gets its file name."""
    text = " ".join(str(error).split())
    name = getattr(error, "filename", None)
    if isinstance(error, OSError) and name and str(name) not in text:
        text = f"{text}: {name}"
    return text


def _after_interrupt(args: argparse.Namespace) -> str:
    """What continues an interrupted command: the same one, or for a new ``train`` the same one
    with ``--resume`` once an epoch was saved (before that, ``--resume`` would be refused)."""
    if args.command != "train" or args.resume:
        return "run the same command again to continue"
    if (Path(args.out) / "last.pt").is_file():
        return "add --resume to the same command to continue"
    return "no epoch was finished, so nothing was saved; run the same command to start again"


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


def _speaks_for_its_machine() -> bool:
    """Under torchrun, whether this process is the first one on its machine (``LOCAL_RANK`` 0):
    rank 0, and on each further machine the process whose lines reach that machine's terminal."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


def _told_for_every_rank(error: BaseException) -> bool:
    """Under torchrun, whether each machine's first process tells this error for the processes
    on its machine: a wrong argument or missing file (the ranks of one machine find the same) or
    an error all ranks raise together (a non-finite loss). Anything else happened to this rank
    alone and is told with its rank."""
    return isinstance(error, (ValueError, FileNotFoundError)) or getattr(error, "every_rank", False)


def _only_train_under_torchrun(command: str) -> None:
    """torchrun starts the processes of one DDP training; any other command would run once per
    process (N experiments racing for one folder): refused with what to run instead."""
    from .distributed import launched
    if command == "train" or not launched():
        return
    instead = (f"python -m lab2 {command} --ddp N (each training on N processes, through "
               "torchrun) or --parallel N (N trainings at once)"
               if command in ("experiment", "report") else f"python -m lab2 {command}")
    raise ValueError(f"torchrun runs `python -m lab2 train` (one training on several "
                     f"processes), not `{command}`; run {instead} without torchrun")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    printable_output()                   # Table 1's "−" on a Windows redirect (cp1252)
    if not logging.getLogger().handlers:   # lab2's status lines (waiting, resuming) as plain lines
        logging.basicConfig(level=logging.WARNING, format="lab2: %(message)s")
        logging.getLogger("lab2").setLevel(logging.INFO)
    if getattr(args, "cache_dir", None) is not None:
        os.environ[CACHE_ENV] = str(args.cache_dir)   # read by lab2.ops.paths.cache_dir everywhere
    rank = _rank()              # under torchrun the first rank tells progress and warnings
    if rank:
        logging.getLogger("lab2").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        one_line_warnings()                  # each of lab2's shown once, whatever the filters
        if rank:
            warnings.simplefilter("ignore")
        try:
            _only_train_under_torchrun(args.command)
            return args.func(args)
        except EXPECTED_ERRORS as e:
            if _speaks_for_its_machine() or not _told_for_every_rank(e):
                print(f"{f'rank {rank}: ' if rank else ''}error: {_one_line(e)}",
                      file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            if _speaks_for_its_machine() and not os.environ.get(QUIET_INTERRUPT_ENV):
                print(f"interrupted; {_after_interrupt(args)}", file=sys.stderr)
            return 130
