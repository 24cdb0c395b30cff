"""Command line: ``python -m lab2 <command>``; ``--help`` on each command says what it does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import atomic
from .paths import default_data_root, default_sample_root


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one clear line instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UserError(Exception):
    """An error whose message is the whole story; printed as one line, exit code 1."""


_EXPECTED = (UserError, ValueError, FileNotFoundError, RuntimeError)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def cmd_download(args: argparse.Namespace) -> int:
    from .data import download_oxford_pet
    folder = download_oxford_pet(args.root, mirror=args.mirror)
    print(f"Oxford-IIIT Pet is ready in {folder}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .data import audit_dataset
    report = audit_dataset(args.root, use_cache=not args.no_cache, workers=args.workers)
    print(report.table())
    if args.json:
        atomic.write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .data import make_sample_dataset
    info = make_sample_dataset(args.root, seed=args.seed, n_trainval=args.n_trainval,
                               n_test=args.n_test, size=args.size, overwrite=args.overwrite)
    print(f"synthetic sample in {info.folder}: {info.n_trainval} trainval + {info.n_test} test "
          f"images (seed {info.seed}); planted problem files:")
    for file, (status, what) in sorted(info.planted.items()):
        print(f"  {file}: {what} -> {status}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .data import build_cache
    from .preprocess import PreprocessParams
    cache = build_cache(args.root, args.image_size, None if args.no_chain else PreprocessParams(),
                        workers=args.workers)
    variant = "raw" if args.no_chain else "preprocessed"
    print(f"{variant} cache of {len(cache.names)} samples at {args.image_size}x{args.image_size}: "
          f"{cache.folder}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The main job: everything lab2 can regenerate, on the real data or on the sample."""
    from .data import audit_dataset, make_sample_dataset
    from .paths import dataset_dir
    root = Path(args.root)
    if (dataset_dir(root) / "annotations" / "trainval.txt").is_file():
        label = "real Oxford-IIIT Pet"
    else:
        root = Path(args.sample_root)
        print(f"WARNING: no real data set in {dataset_dir(args.root)}; using the SYNTHETIC "
              f"sample in {dataset_dir(root)} (run `python -m lab2 download` for the real one).")
        make_sample_dataset(root)
        label = "synthetic sample"
    report = audit_dataset(root)
    print(f"Audit of the {label} data set:")
    print(report.table())
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

def _positive(kind: Callable[[str], int]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lab2", description="lab2: binary pet segmentation (UNet and "
                     "ResNet34-UNet) on Oxford-IIIT Pet. Each command has --help.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND")
    real_root = str(default_data_root())
    sample_root = str(default_sample_root())

    p = sub.add_parser("download", help="fetch, verify and extract the Oxford-IIIT Pet archives",
                       description="Fetch images.tar.gz and annotations.tar.gz, check their md5, "
                                   "and extract them into ROOT/oxford-iiit-pet/. Resumes an "
                                   "interrupted transfer; does nothing if already done.")
    p.add_argument("--root", default=real_root, help=f"data root (default {real_root})")
    p.add_argument("--mirror", default=None,
                   help="base URL holding both archives (default: the official hosts; "
                        "also LAB2_PET_MIRROR)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("audit", help="scan the data set and report every problem file",
                       description="Classify every image and trimap as ok, recovered, skipped or "
                                   "ignored; print the problems as a table.")
    p.add_argument("--root", default=real_root, help=f"data root (default {real_root})")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.add_argument("--workers", type=_positive(int), default=None,
                   help="processes that decode images (default: all cores)")
    p.add_argument("--no-cache", action="store_true", help="audit again even if cached")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("sample", help="write the synthetic sample data set",
                       description="Write a small synthetic data set in the official layout, "
                                   "with planted problem files. Deterministic for a seed.")
    p.add_argument("--root", default=sample_root, help=f"data root (default {sample_root})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-trainval", type=_positive(int), default=200)
    p.add_argument("--n-test", type=_positive(int), default=100)
    p.add_argument("--size", type=_positive(int), default=256,
                   help="longest image side in pixels (sides vary from 0.625x to 1x this)")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if present")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("preprocess", help="build the resized (and preprocessed) sample cache",
                       description="Resize every usable sample to the training size, run the "
                                   "report's OpenCV chain unless --no-chain, and store the result "
                                   "in ROOT/cache/<fingerprint>/ for training to read.")
    p.add_argument("--root", default=real_root, help=f"data root (default {real_root})")
    p.add_argument("--image-size", type=_positive(int), default=512, help="side in pixels (512)")
    p.add_argument("--no-chain", action="store_true",
                   help="store raw resized images (the 'no preprocessing' variant)")
    p.add_argument("--workers", type=_positive(int), default=None,
                   help="processes (default: all cores)")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("report", help="the main job (what `make report` runs)",
                       description="Run everything lab2 regenerates, on the real data set when "
                                   "present, else on the synthetic sample (with a warning).")
    p.add_argument("--root", default=real_root, help=f"real data root (default {real_root})")
    p.add_argument("--sample-root", default=sample_root,
                   help=f"sample data root used when the real set is absent (default {sample_root})")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _EXPECTED as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
