"""Training and inference speed and peak memory of the three networks side by side: UNet,
ResNet34-UNet and LeViT-UNet (the report's future work), each in a process of its own, at one
size and width, with lab2's own training step (``lab2.train.train_one_epoch`` over batches held
in memory, so no data loading is timed).

    python benchmarks/model_speed.py [--size 128] [--width 16] [--batch 8] [--steps 6]
    python benchmarks/model_speed.py --size 512 --width 64 --device cuda     # on a GPU

Peak memory: the process's peak resident memory above what it held before the network was built
(CPU), or ``torch.cuda.max_memory_allocated`` (CUDA).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from results import append_section, markdown_table

MODELS = ("unet", "resnet34_unet", "levit_unet")


def measure(name: str, size: int, width: int, batch: int, steps: int, device: str) -> dict:
    """Run in a fresh process (its peak memory is the network's alone)."""
    import resource
    import time

    import torch

    from lab2.config import TrainConfig
    from lab2.models import model_for
    from lab2.train import DevicePlan, build_optimizer, train_one_epoch
    torch.manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    config = TrainConfig(model=name, image_size=size, base_channels=width)
    plan = DevicePlan(torch.device(device))
    model = plan.place(model_for(config))
    optimizer = build_optimizer(model, config)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    masks = torch.randint(0, 2, (batch, size, size), dtype=torch.uint8)
    batches = [(images, masks, [""] * batch)] * steps

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    train_one_epoch(model, batches[:1], optimizer, plan, epoch=0, progress=False)   # warm-up
    sync()
    started = time.perf_counter()
    train_one_epoch(model, batches, optimizer, plan, epoch=0, progress=False)
    sync()
    train_speed = batch * steps / (time.perf_counter() - started)
    model.eval()
    x = plan.inputs(images, masks)[0]
    with torch.no_grad():
        model(x)
        sync()
        started = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
    infer_speed = batch * steps / (time.perf_counter() - started)
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda") else
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "train_images_per_s": train_speed, "inference_images_per_s": infer_speed,
            "peak_mib": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:                                  # the child process: one network, as JSON
        print(json.dumps(measure(args.one, args.size, args.width, args.batch, args.steps,
                                 args.device)))
        return
    rows = []
    for name in MODELS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--size", str(args.size),
                              "--width", str(args.width), "--batch", str(args.batch),
                              "--steps", str(args.steps), "--device", args.device],
                             capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((name, f"{m['parameters'] / 1e6:.2f} M", f"{m['train_images_per_s']:.1f}",
                     f"{m['inference_images_per_s']:.1f}", f"{m['peak_mib']:.0f}"))
    table = markdown_table(("model", "parameters", "train images/s", "inference images/s",
                            "peak memory MiB"), rows)
    print(table)
    append_section("Three networks side by side (UNet, ResNet34-UNet, LeViT-UNet)",
                   f"{args.size}×{args.size} px, width {args.width} (base channels), batch "
                   f"{args.batch}, {args.steps} steps after one of warm-up, {args.device}, "
                   "fp32; each network in a process of its own.\n\n" + table)


if __name__ == "__main__":
    main()
