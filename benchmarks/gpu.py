"""GPU readiness: lab2's training step on CUDA at the report's 512×512 and what the run will cost.

For each network, batch 8 and 16: fp32, bf16 autocast, bf16 + channels_last, and bf16 +
channels_last + ``torch.compile``; achieved TFLOP/s (FLOPs by FlopCounterMode), the share of the
card's bf16 matrix peak (measured here with a large bf16 matmul), peak GPU memory, and the projected
time of the report's run: 50 epochs × 3312 training images, plus validation (368 images, forward
only, counted as a third of a training step per image).

    python benchmarks/gpu.py                # on a CUDA machine (under 8 minutes)
    python benchmarks/gpu.py --dry-run      # the same code path on the CPU at a tiny size
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from results import append_section, markdown_table
from stepbench import build, time_train_step

TRAIN_IMAGES, VAL_IMAGES, EPOCHS = 3312, 368, 50


def bf16_matmul_peak(device: str, n: int = 8192, repeat: int = 20) -> float:
    """Measured bf16 matrix-multiply throughput in TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeat / (time.perf_counter() - start) / 1e12


def projected_hours(images_per_s: float) -> float:
    """The report's 50 epochs: training steps plus a validation pass (≈ 1/3 step per image)."""
    seconds_per_epoch = TRAIN_IMAGES / images_per_s + VAL_IMAGES / (3 * images_per_s)
    return EPOCHS * seconds_per_epoch / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="run the same measurements on the CPU at 64 px, batch 2 (no compile)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if args.dry_run:
        device, size, batches, steps = "cpu", 64, (2,), 1
        variants = [("fp32", None, False, False), ("bf16 autocast", torch.bfloat16, False, False)]
        peak = None
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run this on a GPU machine, or pass --dry-run to check the "
                     "script on the CPU")
        device, size, batches, steps = "cuda", 512, (8, 16), args.steps
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        variants = [("fp32 (TF32)", None, False, False),
                    ("bf16 autocast", torch.bfloat16, False, False),
                    ("bf16 + channels_last", torch.bfloat16, True, False),
                    ("bf16 + channels_last + compile", torch.bfloat16, True, True)]
        peak = bf16_matmul_peak(device)
        print(f"measured bf16 matmul peak: {peak:.0f} TFLOP/s", flush=True)
    rows = []
    for name in ("unet", "resnet34_unet"):
        for batch in batches:
            for label, amp, channels_last, compile in variants:
                if compile:
                    torch._dynamo.reset()
                r = time_train_step(name, build(name), batch, size, device=device,
                                    channels_last=channels_last, amp=amp, compile=compile,
                                    steps=steps, warmup=3 if compile else 1)
                tflops = r.achieved_gflops / 1000
                rows.append((name, batch, label, f"{r.images_per_s:.1f}", f"{tflops:.1f}",
                             f"{100 * tflops / peak:.0f}%" if peak else "n/a",
                             f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "n/a",
                             f"{projected_hours(r.images_per_s):.2f}"))
                print(rows[-1], flush=True)
    table = markdown_table(("model", "batch", "variant", "train images/s", "achieved TFLOP/s",
                            "share of bf16 peak", "peak memory GiB",
                            "projected 50-epoch run (h)"), rows)
    print(table)
    where = ("DRY RUN on the CPU at 64 px — not GPU numbers" if args.dry_run else
             f"{torch.cuda.get_device_name()} at {size}x{size}; bf16 matmul peak measured "
             f"{peak:.0f} TFLOP/s")
    append_section("GPU training step" + (" (dry run)" if args.dry_run else ""),
                   f"{where}.\n\n{table}", "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
