"""End to end: lab2's real training run (data loader, augmentation, training, validation) per epoch.

gpu.py times the training step on batches already in memory; this script checks the other half of
its projection, that the data loader keeps the GPU busy. It trains each network with the report's
settings (batch 8, bf16 + channels_last on CUDA) on a synthetic sample of photo-sized images, once
per number of loader workers, and reports the median epoch time after the first epoch (which pays
cudnn's autotuning), the training images per second it implies, and the report's 50-epoch run
scaled from it (3312 training images). Each epoch also pays fixed costs (starting the loader's
workers, the first batches) that the real data set spreads over six times more images, so the
projection from this small sample is an upper bound.

    python benchmarks/epoch.py                 # on a CUDA machine: 512 px, 2 / 4 / 8 workers
    python benchmarks/epoch.py --dry-run       # the same code on the CPU at 64 px
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from results import (
    append_section,
    lift_worker_cap,
    loader_workers,
    markdown_table,
    sample_with_cache,
    steady_epoch_seconds,
)

TRAIN_IMAGES, EPOCHS = 3312, 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, 64 px, a 40-image sample, narrow networks, 0 and 2 workers")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--n-trainval", type=int, default=600)
    parser.add_argument("--sample-size", type=int, default=500, help="longest photo side, px")
    parser.add_argument("--beyond-cores", action="store_true",
                        help="start the workers asked for even beyond the usable CPU cores (lab2 "
                             "caps them at one per core): to measure that cap's alternative")
    parser.add_argument("--compile", action="store_true",
                        help="also train each network compiled (torch.compile) with the first "
                             "worker count: the end-to-end basis of a compile default")
    args = parser.parse_args()

    from lab2.config import profile_config
    from lab2.ops.trainer import train
    if args.beyond_cores:
        lift_worker_cap()

    if args.dry_run:
        size, n_trainval, sample_size, workers, epochs = 64, 40, 96, [0, 2], 2
        extra = dict(base_channels=8, device="cpu")
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run this on a GPU machine, or pass --dry-run")
        size, n_trainval, sample_size = 512, args.n_trainval, args.sample_size
        workers, epochs, extra = args.workers, args.epochs, {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, generated, cached = sample_with_cache(tmp, n_trainval, sample_size, size)
        plan = [(w, False) for w in workers] + ([(workers[0], True)] if args.compile else [])
        for model in ("unet", "resnet34_unet"):
            for w, compiled in plan:
                out = Path(tmp) / f"{model}_{w}_{compiled}"
                config = profile_config("full", model=model, image_size=size, epochs=epochs,
                                        num_workers=w, compile=compiled, **extra)
                result = train(config, root, out, progress=False)
                seconds = [h["seconds"] for h in result["history"]]
                steady = steady_epoch_seconds(seconds)
                record = json.loads((out / "run.json").read_text(encoding="utf-8"))
                n_train, used = record["n_train"], loader_workers(record["loader"])
                rate = n_train / steady
                rows.append((model, "yes" if compiled else "no", config.batch_size,
                             w if used == w else f"{used} ({w} asked)", n_train,
                             f"{seconds[0]:.1f}",
                             f"{steady:.2f}", f"{rate:.0f}",
                             f"{EPOCHS * steady * TRAIN_IMAGES / n_train / 3600:.2f}"))
                print(rows[-1], flush=True)
    table = markdown_table(("model", "torch.compile", "batch", "loader workers", "train images",
                            "first epoch s",
                            "median later epoch s", "train images/s (epoch incl. validation)",
                            "projected 50-epoch run (h)"), rows)
    print(table)
    where = "" if args.dry_run else (
        f"{torch.cuda.get_device_name()}, {size}x{size}, SYNTHETIC sample ({n_trainval} trainval "
        f"photos up to {sample_size} px), {epochs} epochs per row; sample drawn in "
        f"{generated:.0f} s, cache built in {cached:.1f} s.\n\n")
    append_section("Training epoch end to end", where + table, dry_run=args.dry_run)

if __name__ == "__main__":
    main()
