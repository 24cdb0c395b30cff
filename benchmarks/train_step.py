"""Training-step speed on this CPU: lab2's two networks against their peers, in one process.

Peers: segmentation_models_pytorch's ``Unet("resnet34", encoder_weights=None, classes=2)``
(install with ``pip install -e .[bench]``) and a textbook UNet written in ``stepbench.py``. For
each network, size (128 and 256 px) and memory format (contiguous, channels_last): images/s and
achieved GFLOP/s of forward + backward + Adam step on the same random inputs. FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode``. Ratios lab2/peer are printed.

    python benchmarks/train_step.py [--sizes 128 256] [--steps 3]
"""

from __future__ import annotations

import argparse

import torch
from results import append_section, markdown_table
from stepbench import TrainStep, build

MODELS = ("unet", "textbook_unet", "resnet34_unet", "smp_unet_resnet34")
BATCH = {128: 4, 256: 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help=f"networks to compare (default {' '.join(MODELS)}; "
                             "also unet_dropout0)")
    args = parser.parse_args()
    results = {}
    rows = []
    for size in args.sizes:
        batch = BATCH.get(size, 2)
        # Every variant is built once, warmed up, then timed one step at a time in round-robin,
        # so a change in the machine's load touches all of them alike; the median is reported.
        benches = {(name, cl): TrainStep(name, build(name), batch, size, channels_last=cl)
                   for name in args.models for cl in (False, True)}
        for bench in benches.values():
            bench.step()
        for _ in range(args.steps):
            for bench in benches.values():
                bench.timed()
        for (name, channels_last), bench in benches.items():
            r = bench.result()
            results[(size, name, channels_last)] = r
            rows.append((size, batch, name, "channels_last" if channels_last else "contiguous",
                         f"{r.images_per_s:.2f}", f"{r.gflops_per_step / batch:.1f}",
                         f"{r.achieved_gflops:.1f}"))
            print(rows[-1], flush=True)
        del benches
    table = markdown_table(("px", "batch", "model", "memory format", "train images/s",
                            "GFLOP per image (fwd+bwd)", "achieved GFLOP/s"), rows)

    def best(size, name):
        return max((results[(size, name, cl)] for cl in (False, True)),
                   key=lambda r: r.images_per_s)
    ratio_rows = []
    for size in args.sizes:
        for ours, peer in (("unet", "textbook_unet"), ("unet_dropout0", "textbook_unet"),
                           ("resnet34_unet", "smp_unet_resnet34")):
            if ours not in args.models or peer not in args.models:
                continue
            a, b = best(size, ours), best(size, peer)
            ratio_rows.append((size, f"{ours} / {peer}", f"{a.images_per_s / b.images_per_s:.2f}",
                               f"{a.achieved_gflops / b.achieved_gflops:.2f}"))
    ratios = markdown_table(("px", "lab2 / peer (best memory format each)", "images/s ratio",
                             "GFLOP/s ratio"), ratio_rows)
    print(table, ratios, sep="\n\n")
    append_section("Training step on CPU", f"Threads: {torch.get_num_threads()}; fused Adam for "
                   f"every model; median of {args.steps} round-robin timed steps after 1 warm-up; "
                   f"FLOPs by FlopCounterMode.\n\n{table}\n\n{ratios}")


if __name__ == "__main__":
    main()
