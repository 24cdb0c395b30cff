"""Which dropout on a CPU: element-wise ``nn.Dropout`` (the report's "a Dropout layer") against
channel-wise ``nn.Dropout2d``, and none, in lab2's two networks.

``TrainConfig.dropout_kind`` is ``element`` in the ``full`` profile (the report's literal reading)
and, in the CPU profiles (``quick``, ``smoke``), whichever this measurement finds cheaper. At the
``quick`` profile's width (16) and size (128 px), batch 8, fp32, fused Adam, one process: training
images/s of each kind, timed round-robin (median).

    python benchmarks/dropout.py [--steps 7] [--batch 8] [--size 128] [--networks unet:16 ...]
"""

from __future__ import annotations

import argparse

import torch
from results import append_section, markdown_table
from stepbench import TrainStep

from lab2.config import PROFILE_OVERRIDES
from lab2.models import build_model

NETWORKS = ("unet:16", "resnet34_unet:16")    # name:width
KINDS = (("element", 0.1), ("channel", 0.1), ("element", 0.0))   # (kind, probability)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS),
                        help="name:width pairs (default: both networks at the quick width 16)")
    args = parser.parse_args()
    chosen = PROFILE_OVERRIDES["quick"].get("dropout_kind", "element")
    rows = []
    for name, width in (spec.split(":") for spec in args.networks):
        width = int(width)
        benches = {(kind, p): TrainStep(f"{name} w{width} {kind} {p}",
                                        build_model(name, base_channels=width, dropout=p,
                                                    dropout_kind=kind),
                                        args.batch, args.size)
                   for kind, p in KINDS}
        for bench in benches.values():
            bench.step()
        for _ in range(args.steps):
            for bench in benches.values():
                bench.timed()
        base = benches[("element", 0.1)].result().images_per_s
        for (kind, p), bench in benches.items():
            r = bench.result()
            label = "none (p = 0)" if p == 0 else f"{kind}-wise, p = {p}"
            mark = "**quick / smoke profiles**" if (kind, p) == (chosen, 0.1) else (
                "**full profile (the report's)**" if (kind, p) == ("element", 0.1) else "")
            rows.append((f"{name} (width {width})", label, f"{r.images_per_s:.2f}",
                         f"{r.images_per_s / base:.2f}×", mark))
            print(rows[-1], flush=True)
        del benches
    table = markdown_table(("network", "dropout", "train images/s", "vs element-wise", ""), rows)
    print(table)
    append_section("Dropout kind on the CPU",
                   f"{args.size} px, batch {args.batch}, fp32, fused Adam, threads "
                   f"{torch.get_num_threads()}, median of {args.steps} round-robin steps after "
                   f"1 warm-up.\n\n{table}")


if __name__ == "__main__":
    main()
