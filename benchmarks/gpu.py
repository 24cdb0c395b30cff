"""GPU readiness: lab2's training step on CUDA at the report's 512×512 and what the run will cost.

For each network, batch 16 and 8: fp32 (TF32), bf16 autocast, bf16 + channels_last, and bf16 +
channels_last + ``torch.compile``; achieved TFLOP/s (FLOPs by FlopCounterMode), the share of the
card's bf16 matrix peak (measured here with a large bf16 matmul), peak GPU memory, and the projected
time of the report's run: 50 epochs × 3312 training images, plus validation (368 images, forward
only, counted as a third of a training step per image).

Also, at the report's batch 8 with lab2's default CUDA settings (bf16 + channels_last):
- lab2's own loop (``lab2.train.train_one_epoch`` over pinned uint8 CPU batches, as its loader
  yields them, so host-to-device copies, normalisation and the loss guard are in the time): the
  basis of the projected time of the whole experiment;
- the same step reading its loss on the host every step (lab2's loop before ``LossGuard``);
- the peers, textbook UNet and (if installed) segmentation_models_pytorch's Unet("resnet34").

Configurations run in order of importance and stop being started once ``--budget-s`` has passed
(they are listed as skipped), so the script ends in under 8 minutes.

    python benchmarks/gpu.py                # on a CUDA machine
    python benchmarks/gpu.py --dry-run      # the same code path on the CPU at a tiny size
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass

import torch
from results import append_section, markdown_table
from stepbench import StepResult, TrainStep, build, time_train_step

TRAIN_IMAGES, VAL_IMAGES, EPOCHS = 3312, 368, 50
MODELS = ("unet", "resnet34_unet")
REPORT_BATCH = 8


def bf16_matmul_peak(device: str, n: int = 8192, repeat: int = 20) -> float:
    """Measured bf16 matrix-multiply throughput in TFLOP/s (random operands, CUDA events)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * repeat / (start.elapsed_time(end) / 1000) / 1e12


def projected_hours(images_per_s: float) -> float:
    """The report's 50 epochs: training steps plus a validation pass (≈ 1/3 step per image)."""
    seconds_per_epoch = TRAIN_IMAGES / images_per_s + VAL_IMAGES / (3 * images_per_s)
    return EPOCHS * seconds_per_epoch / 3600


def time_lab2_loop(name: str, batch: int, size: int, device: str, amp, channels_last: bool,
                   steps: int) -> StepResult:
    """lab2's ``train_one_epoch`` (the code a run executes) over ``steps`` pinned CPU batches."""
    from lab2.config import TrainConfig
    from lab2.train import DevicePlan, build_optimizer, train_one_epoch

    bench = TrainStep(name, build(name), batch, size, device=device,
                      channels_last=channels_last, amp=amp)   # for the FLOP count and model
    step = DevicePlan(torch.device(device), amp, channels_last)
    optimizer = build_optimizer(bench.model, TrainConfig(model=name))
    pin = device.startswith("cuda")
    # what lab2's loader yields: uint8 images and masks, normalised on the device
    # (DevicePlan.inputs)
    images = torch.randint(0, 256, tuple(bench.x.shape), dtype=torch.uint8)
    masks = bench.y.cpu().to(torch.uint8)
    if pin:
        images, masks = images.pin_memory(), masks.pin_memory()
    names = [f"img{i}" for i in range(batch)]
    batches = [(images, masks, names)] * steps
    start = time.perf_counter()
    train_one_epoch(bench.model, batches[:2], optimizer, step, epoch=0, progress=False)
    warmup_s = time.perf_counter() - start
    if pin:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    # ends in a sync
    train_one_epoch(bench.model, batches, optimizer, step, epoch=0, progress=False)
    bench.seconds.append((time.perf_counter() - start) / steps)
    return bench.result(warmup_s)


@dataclass
class Config:
    model: str
    batch: int
    variant: str
    amp: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    sync_loss: bool = False
    lab2_loop: bool = False


def configs(dry_run: bool) -> list[Config]:
    bf16 = torch.bfloat16
    if dry_run:
        precisions = (("fp32", None), ("bf16 autocast", bf16))
        return [Config(m, 2, v, a) for m in MODELS for v, a in precisions] + \
               [Config(m, 2, "lab2 loop (fp32)", lab2_loop=True) for m in MODELS]
    out = []
    for model in MODELS:                                   # 1. the precision and layout sweep
        for batch in (16, REPORT_BATCH):
            out += [Config(model, batch, "fp32 (TF32)"),
                    Config(model, batch, "bf16 autocast", bf16),
                    Config(model, batch, "bf16 + channels_last", bf16, True)]
    for model in MODELS:                                   # 2. lab2's loop, before and after
        out += [Config(model, REPORT_BATCH, "lab2 loop: train_one_epoch (bf16 + CL)", bf16, True,
                       lab2_loop=True),
                Config(model, REPORT_BATCH, "bf16 + CL, loss read on host every step", bf16,
                       True, sync_loss=True)]
    out += [Config("textbook_unet", REPORT_BATCH, "peer: bf16 + channels_last", bf16, True),
            Config("smp_unet_resnet34", REPORT_BATCH, "peer: bf16 + channels_last", bf16, True)]
    for batch in (REPORT_BATCH, 16):                       # 3. compilation (slowest to set up)
        out += [Config(m, batch, "bf16 + channels_last + compile", bf16, True, True)
                for m in MODELS]
    return out


def run_config(c: Config, device: str, size: int, steps: int) -> StepResult:
    if c.lab2_loop:
        return time_lab2_loop(c.model, c.batch, size, device, c.amp, c.channels_last, steps)
    if c.compile:
        torch._dynamo.reset()
    return time_train_step(c.model, build(c.model), c.batch, size, device=device,
                           channels_last=c.channels_last, amp=c.amp, compile=c.compile,
                           sync_loss=c.sync_loss, steps=steps, warmup=3 if c.compile else 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="run the same code on the CPU at 64 px, batch 2 (no compile)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--budget-s", type=float, default=400,
                        help="start no configuration after this many seconds (default 400)")
    args = parser.parse_args()
    if args.dry_run:
        device, size, steps, peak = "cpu", 64, 1, None
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run this on a GPU machine, or pass --dry-run to check the "
                     "script on the CPU")
        device, size, steps = "cuda", 512, args.steps
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        peak = bf16_matmul_peak(device)
        print(f"measured bf16 matmul peak: {peak:.0f} TFLOP/s", flush=True)
    began = time.perf_counter()
    rows, results = [], {}
    for c in configs(args.dry_run):
        head = (c.model, c.batch, c.variant)
        if time.perf_counter() - began > args.budget_s:
            rows.append(head + ("skipped: time budget",) + ("",) * 5)
            continue
        try:
            r = run_config(c, device, size, steps)
        except ImportError as e:            # the optional peer (pip install -e .[bench])
            rows.append(head + (f"not run: {e}",) + ("",) * 5)
            continue
        except Exception as e:              # one failing variant must not lose the others
            rows.append(head + (f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}",)
                        + ("",) * 5)
            print(rows[-1], flush=True)
            continue
        finally:
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        results[head] = r
        tflops = r.achieved_gflops / 1000
        rows.append(head + (f"{r.images_per_s:.1f}", f"{tflops:.1f}",
                            f"{100 * tflops / peak:.0f}%" if peak else "n/a",
                            f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "n/a",
                            f"{r.warmup_s:.1f}", f"{projected_hours(r.images_per_s):.2f}"))
        print(rows[-1], flush=True)
    table = markdown_table(("model", "batch", "variant", "train images/s", "achieved TFLOP/s",
                            "share of bf16 peak", "peak memory GiB", "warm-up s",
                            "projected 50-epoch run (h)"), rows)
    loop_configs = [c for c in configs(args.dry_run) if c.lab2_loop]
    loop = {c.model: results.get((c.model, c.batch, c.variant)) for c in loop_configs}
    summary = ""
    if all(loop.values()):
        hours = {m: projected_hours(r.images_per_s) for m, r in loop.items()}
        summary = ("\n\nProjected time of the whole experiment (four runs: each network with and "
                   "without the preprocessing chain, which costs nothing at training time once "
                   f"cached), from lab2's loop at batch {loop_configs[0].batch}: "
                   f"2 × {hours['unet']:.2f} h (UNet) + 2 × {hours['resnet34_unet']:.2f} h "
                   f"(ResNet34-UNet) = **{2 * sum(hours.values()):.1f} h** of GPU time, if the "
                   "data loader keeps up (see data_pipeline.py).")
    print(table + summary)
    where = "" if args.dry_run else (
        f"{torch.cuda.get_device_name()} at {size}x{size}, {steps} timed steps per row (median); "
        f"bf16 matmul peak measured {peak:.0f} TFLOP/s (8192³, random operands).\n\n")
    append_section("GPU training step", f"{where}{table}{summary}", dry_run=args.dry_run)

if __name__ == "__main__":
    main()
