"""What DistributedDataParallel costs one process per training step, and what lab2's wrapper saves.

Each network's training step (lab2's precision and memory layout for the device, Adam, batch 8) is
timed three ways in one process: plain; under DDP as PyTorch sets it up by default, which copies
rank 0's buffers (BatchNorm's running statistics) to every rank before each forward pass; and
under ``lab2.distributed.wrap``, which leaves that copy out when BatchNorm is synchronised. Both
DDP variants synchronise BatchNorm, as a lab2 run under torchrun does. The three are timed in
alternating rounds, so that drift (clocks, other load) falls on all of them alike; the table gives
the median step of each and its speed relative to the plain step.

``benchmarks/ddp.py`` compares whole runs (loader, validation, files); this isolates the step.

    python benchmarks/ddp_step.py               # on a CUDA machine: NCCL, 512 px
    python benchmarks/ddp_step.py --dry-run     # the CPU: gloo, 64 px, narrow UNet
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from results import append_section, markdown_table

VARIANTS = ("plain", "DDP, buffers copied each step (PyTorch's default)",
            "DDP, lab2.distributed.wrap (no copy)")


def one_process_group(backend: str) -> None:
    """A process group of this one process (what ``torchrun --nproc_per_node 1`` sets up), its
    store in memory."""
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def train_steps(step, model, optimizer, scaler, x, y, n: int) -> float:
    """``n`` training steps of ``model`` on the batch (x, y); the seconds they took."""
    if step.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(n):
        with step.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if step.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, gloo, 64 px, narrow UNet")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    args = parser.parse_args()

    from lab2.config import profile_config
    from lab2.distributed import backend_for, synchronise_batchnorm, wrap
    from lab2.machine import Step
    from lab2.models import model_for
    from lab2.train import build_optimizer

    if args.dry_run:
        size, steps, settings = 64, min(args.steps, 3), dict(device="cpu", base_channels=8)
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run this on a GPU machine, or pass --dry-run")
        size, steps, settings = 512, args.steps, {}
    rows = []
    for name in ("unet", "resnet34_unet"):
        config = profile_config("full", model=name, image_size=size, **settings)
        step = Step.for_config(config)
        if not dist.is_initialized():
            if step.device.type == "cuda":
                torch.cuda.set_device(0)
            one_process_group(backend_for(step.device))
        torch.manual_seed(0)
        x = torch.randn(config.batch_size, 3, size, size, device=step.device)
        if step.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (config.batch_size, size, size), device=step.device)
        runs = []
        for variant in VARIANTS:
            model = step.place(model_for(config))
            if variant != VARIANTS[0]:
                model = synchronise_batchnorm(model, step.device)
                model = (wrap(model, step.device, synchronised_bn=True) if "wrap" in variant else
                         torch.nn.parallel.DistributedDataParallel(
                             model, device_ids=[0] if step.device.type == "cuda" else None))
            runs.append((variant, model, build_optimizer(model, config), step.scaler(), []))

        for _, model, optimizer, scaler, _ in runs:          # cudnn autotuning, first allocations
            train_steps(step, model, optimizer, scaler, x, y, 3)
        for _ in range(args.rounds):
            for _, model, optimizer, scaler, seconds in runs:
                seconds.append(train_steps(step, model, optimizer, scaler, x, y, steps) / steps)
        plain = statistics.median(runs[0][4])
        buffers = sum(1 for _ in runs[0][1].buffers())
        for variant, _, _, _, seconds in runs:
            median = statistics.median(seconds)
            rows.append((name, variant, buffers, f"{median * 1000:.1f}",
                         f"{min(seconds) * 1000:.1f}–{max(seconds) * 1000:.1f}",
                         f"{config.batch_size / median:.1f}", f"{plain / median:.3f}"))
            print(rows[-1], flush=True)
    backend = dist.get_backend()
    dist.destroy_process_group()
    table = markdown_table(("model", "step", "buffers", "median ms/step", "range over rounds",
                            "train images/s", "vs plain"), rows)
    print(table)
    where = "" if args.dry_run else (
        f"{torch.cuda.get_device_name()}, {size}x{size}, batch 8, lab2's precision and layout, "
        f"one process ({backend}); {args.rounds} rounds of {steps} steps per variant, "
        "alternating.\n\n")
    append_section("DDP cost per training step, one process", where + table,
                   dry_run=args.dry_run)


if __name__ == "__main__":
    main()
