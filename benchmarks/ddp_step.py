"""What DistributedDataParallel costs one process per training step, and what lab2's wrapper saves.

Each network's training step (``stepbench.TrainStep``, as ``gpu.py`` times it: lab2's precision
and memory layout for the device, fused Adam, batch 8) is timed four ways in one process: plain;
under DDP as PyTorch sets it up by default, which copies rank 0's buffers (BatchNorm's running
statistics) to every rank before each forward pass; under ``lab2.ops.distributed.wrap``, which
leaves that copy out when BatchNorm is synchronised; and, as the candidate next step, without the
copy and with ``gradient_as_bucket_view=True`` (the gradients live in DDP's communication buckets
instead of being copied into them after each backward pass). The DDP variants synchronise
BatchNorm, as a lab2 run under torchrun does. They are timed in alternating rounds, so that drift
(clocks, other load) falls on all of them alike; the table gives the median step of each and its
speed relative to the plain step. On this 2-core CPU the rounds vary by about ±5 % (three runs of
``--dry-run --rounds 15`` put the bucket views at 0.943-1.025x of plain, the wrapper at
0.887-1.004x): the dry run checks the script, the GPU run decides.

``benchmarks/ddp.py`` compares whole runs (loader, validation, files); this isolates the step.

    python benchmarks/ddp_step.py               # on a CUDA machine: NCCL, 512 px
    python benchmarks/ddp_step.py --dry-run     # the CPU: gloo, 64 px, narrow UNet
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.distributed as dist
from results import append_section, markdown_table
from stepbench import TrainStep


def one_process_group(backend: str) -> None:
    """A process group of this one process (what ``torchrun --nproc_per_node 1`` sets up), its
    store in memory."""
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, gloo, 64 px, narrow UNet")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    args = parser.parse_args()

    from lab2.config import profile_config
    from lab2.models import model_for
    from lab2.ops.distributed import BUFFER_SYNC_ARG, backend_for, synchronise_batchnorm, wrap
    from lab2.ops.machine import plan_for

    #: each variant's name and how the model is wrapped: not at all, by lab2's wrapper, or by
    #: DistributedDataParallel with these arguments
    variants = (("plain", None),
                ("DDP, buffers copied each step (PyTorch's default)", {}),
                ("DDP, lab2.ops.distributed.wrap (no copy)", wrap),
                ("DDP, no copy, gradients as bucket views",
                 {BUFFER_SYNC_ARG: False, "gradient_as_bucket_view": True}))

    if args.dry_run:
        size, steps, settings = 64, min(args.steps, 3), dict(device="cpu", base_channels=8)
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run this on a GPU machine, or pass --dry-run")
        size, steps, settings = 512, args.steps, {}
    rows = []
    for name in ("unet", "resnet34_unet"):
        config = profile_config("full", model=name, image_size=size, **settings)
        step = plan_for(config)[0]
        if not dist.is_initialized():
            if step.device.type == "cuda":
                torch.cuda.set_device(0)
            one_process_group(backend_for(step.device))
        benches = []
        for variant, ddp in variants:
            model = step.place(model_for(config))
            if ddp is wrap:
                model = wrap(synchronise_batchnorm(model, step.device), step.device,
                             synchronised_bn=True)
            elif ddp is not None:
                model = torch.nn.parallel.DistributedDataParallel(
                    synchronise_batchnorm(model, step.device),
                    device_ids=[0] if step.device.type == "cuda" else None, **ddp)
            benches.append(TrainStep(variant, model, config.batch_size, size,
                                     device=step.device.type, channels_last=step.channels_last,
                                     amp=step.amp))
        for bench in benches:                       # cudnn autotuning, first allocations
            for _ in range(3):
                bench.step()
        for _ in range(args.rounds):
            for bench in benches:
                bench.timed(steps)
        plain = statistics.median(benches[0].seconds)
        buffers = sum(1 for _ in benches[0].model.buffers())
        for bench in benches:
            median = statistics.median(bench.seconds)
            rows.append((name, bench.name, buffers, f"{median * 1000:.1f}",
                         f"{min(bench.seconds) * 1000:.1f}–{max(bench.seconds) * 1000:.1f}",
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
