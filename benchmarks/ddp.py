"""One run through torchrun (DistributedDataParallel) against the same run started plainly: what
lab2's DDP path costs, in training images per second.

Each network trains with the ``full`` profile for a few epochs on a synthetic sample, once with
``python -m lab2 train`` and once with ``torchrun --nproc_per_node 1 -m lab2 train`` (one rank:
NCCL on a GPU, the DDP wrapper, synchronised BatchNorm, the sharded sampler, rank 0's writes), and
the table gives the median epoch time after the first (which pays cudnn's autotuning), the
training images per second it implies, and the ratio to the plain run. On one GPU the two should
match within noise; several GPUs are not measured here.

    python benchmarks/ddp.py               # on a CUDA machine: 512 px
    python benchmarks/ddp.py --dry-run     # the CPU at 64 px with gloo, plus 2 processes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from results import append_section, markdown_table, sample_with_cache, steady_epoch_seconds


def run(command: list[str], env: dict) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:8])} ... failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, 64 px, a 40-image sample, narrow networks, gloo")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-trainval", type=int, default=300)
    parser.add_argument("--sample-size", type=int, default=500, help="longest photo side, px")
    args = parser.parse_args()

    from lab2.ops.checkpoint import load_checkpoint
    from lab2.ops.distributed import torchrun_command
    from lab2.ops.processes import cores_each

    if args.dry_run:
        size, n_trainval, sample_size, epochs = 64, 40, 96, 2
        flags, launches = ["--base-channels", "8", "--device", "cpu"], [0, 1, 2]
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run this on a GPU machine, or pass --dry-run")
        size, n_trainval, sample_size, epochs = 512, args.n_trainval, args.sample_size, args.epochs
        flags, launches = [], [0, 1]                      # 0 = plain, N = torchrun with N ranks
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, _, _ = sample_with_cache(tmp, n_trainval, sample_size, size)
        for model in ("unet", "resnet34_unet"):
            plain_rate = None
            for nproc in launches:
                out = Path(tmp) / f"{model}_{nproc}"
                args_ = ["train", "--model", model, "--profile", "full", "--root", str(root),
                         "--out", str(out), "--image-size", str(size), "--epochs", str(epochs),
                         "--max-eval-samples", "64", *flags]
                env = {**os.environ, "OMP_NUM_THREADS": str(cores_each(nproc)),
                       "TQDM_DISABLE": "1"}
                command = (torchrun_command(nproc, args_) if nproc else
                           [sys.executable, "-m", "lab2", *args_])
                run(command, env)
                history = load_checkpoint(out / "last.pt")["history"]
                record = json.loads((out / "run.json").read_text(encoding="utf-8"))
                seconds = [h["seconds"] for h in history]
                steady = steady_epoch_seconds(seconds)
                rate = record["n_train"] / steady
                plain_rate = plain_rate or rate
                launcher = (f"torchrun --nproc_per_node {nproc}" if nproc else "python -m lab2")
                rows.append((model, launcher, record["world_size"], record["backend"] or "-",
                             record["precision"], f"{seconds[0]:.1f}", f"{steady:.2f}",
                             f"{rate:.1f}", f"{rate / plain_rate:.2f}"))
                print(rows[-1], flush=True)
    table = markdown_table(("model", "started by", "processes", "backend", "precision",
                            "first epoch s", "median later epoch s",
                            "train images/s (epoch incl. validation of 64)", "vs plain"), rows)
    print(table)
    where = "" if args.dry_run else (
        f"{torch.cuda.get_device_name()}, {size}x{size}, profile full, SYNTHETIC sample "
        f"({n_trainval} trainval photos up to {sample_size} px), {epochs} epochs per row.\n\n")
    append_section("DDP path on one device (torchrun) against a plain run", where + table,
                   dry_run=args.dry_run)


if __name__ == "__main__":
    main()
