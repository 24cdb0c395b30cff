"""CPU precision and memory layout: fp32 vs bf16 autocast, contiguous vs channels_last.

What ``amp="auto"`` and ``channels_last="auto"`` choose on a CPU (``lab2.ops.machine``) follows
this measurement: bf16 where the CPU computes bf16 natively (AVX512-BF16 or AMX), fp32 elsewhere.
channels_last is faster on both kinds, but lab2 keeps the CPU contiguous: oneDNN's 1x1 stride-2
convolution backward crashes or hangs in channels_last for some shapes (lab2/ops/machine.py), which
this benchmark's shapes do not reach. For lab2's networks at the ``quick`` profile's width (16)
and at the report's width (64, UNet), 128 px, batch 8, fused Adam, one process: training images/s
of each variant, timed round-robin (median), side by side with what lab2 picks on this CPU and
why.

    python benchmarks/cpu_precision.py [--steps 5] [--batch 8] [--size 128] [--networks unet:16 ...]
                                       [--fp32-only]
"""

from __future__ import annotations

import argparse

import torch
from results import append_section, markdown_table
from stepbench import TrainStep

from lab2.models import build_model
from lab2.ops.machine import choose_channels_last, choose_precision, describe

NETWORKS = ("unet:16", "resnet34_unet:16", "unet:64")   # name:width
VARIANTS = ((None, False), (None, True), (torch.bfloat16, False), (torch.bfloat16, True))
FP32_VARIANTS = VARIANTS[:2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS),
                        help="name:width pairs (default: both networks at the quick width 16, "
                             "UNet at the report's 64; emulated bf16 at width 64 takes minutes "
                             "per step on a CPU without native bf16)")
    parser.add_argument("--fp32-only", action="store_true",
                        help="compare the two memory formats in fp32 only")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    amp, amp_why = choose_precision("auto", cpu)
    layout, layout_why = choose_channels_last("auto", cpu)
    print(f"lab2 picks on this CPU: {describe(amp)} ({amp_why}), "
          f"channels_last={layout} ({layout_why})", flush=True)
    rows = []
    for name, width in (spec.split(":") for spec in args.networks):
        width = int(width)
        benches = {(dtype, cl): TrainStep(f"{name} w{width}",
                                          build_model(name, base_channels=width),
                                          args.batch, args.size, channels_last=cl, amp=dtype)
                   for dtype, cl in (FP32_VARIANTS if args.fp32_only else VARIANTS)}
        for bench in benches.values():
            bench.step()
        for _ in range(args.steps):
            for bench in benches.values():
                bench.timed()
        base = benches[(None, False)].result().images_per_s
        for (dtype, cl), bench in benches.items():
            r = bench.result()
            chosen = "**lab2 auto**" if (dtype, cl) == (amp, layout) else ""
            rows.append((f"{name} (width {width})", describe(dtype),
                         "channels_last" if cl else "contiguous", f"{r.images_per_s:.2f}",
                         f"{r.images_per_s / base:.2f}×", chosen))
            print(rows[-1], flush=True)
        del benches
    table = markdown_table(("network", "precision", "memory format", "train images/s",
                            "vs fp32 contiguous", ""), rows)
    print(table)
    append_section("CPU precision and memory layout",
                   f"{args.size} px, batch {args.batch}, fused Adam, threads "
                   f"{torch.get_num_threads()}, median of {args.steps} round-robin steps after "
                   f"1 warm-up. lab2's auto choice here: {describe(amp)} ({amp_why}); "
                   f"channels_last={layout} ({layout_why}).\n\n{table}")


if __name__ == "__main__":
    main()
