"""What checking a checkpoint's CRC-32s costs (:func:`lab2.ops.checkpoint.check_entries`): a
full-size ``last.pt`` (the report's 512 px ResNet34-UNet and UNet at full width, with Adam's
state: what a run resumes from) loaded as lab2 loaded it before (``torch.load`` alone) and as it
does now (every entry checked, then loaded from the same open file), and the metadata read of a
memory-mapped checkpoint (everything but the tensors checked). The file is read from memory (the
page cache), where the check is the larger share of the time.

    python benchmarks/checkpoint_check.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from results import append_section, markdown_table

from lab2.config import TrainConfig
from lab2.models import model_for
from lab2.ops.checkpoint import check_entries, load_checkpoint, save_checkpoint
from lab2.train import build_optimizer


def full_size_checkpoint(model: str, path: Path) -> int:
    """A last.pt as a full-profile run writes it (weights and Adam's two moments); its bytes."""
    config = TrainConfig(model=model)
    network = model_for(config)
    optimizer = build_optimizer(network, config)
    for p in network.parameters():          # Adam's state without a forward pass at 512 px
        p.grad = torch.zeros_like(p)
    optimizer.step()
    save_checkpoint(path, {"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                           "epoch": 1, "config": config.to_dict()})
    return path.stat().st_size


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in ("resnet34_unet", "unet"):
            path = Path(folder) / f"{model}.pt"
            size = full_size_checkpoint(model, path)
            load_checkpoint(path)                                      # into the page cache
            before = median_seconds(lambda p=path: torch.load(p, weights_only=True),
                                    args.repeats)
            check = median_seconds(lambda p=path: check_entries(p, p), args.repeats)
            now = median_seconds(lambda p=path: load_checkpoint(p), args.repeats)
            meta_before = median_seconds(
                lambda p=path: torch.load(p, weights_only=True, mmap=True), args.repeats)
            meta_now = median_seconds(lambda p=path: load_checkpoint(p, mmap=True), args.repeats)
            rows.append([f"{model} ({size / 2**20:,.0f} MiB)", f"{before:.3f}", f"{check:.3f}",
                         f"{now:.3f}", f"{now / before:.2f}×", f"{meta_before * 1e3:.1f}",
                         f"{meta_now * 1e3:.1f}"])
            path.unlink()
    table = markdown_table(["last.pt, full profile", "s torch.load (before)",
                            "s CRC-32 check alone", "s load_checkpoint (now)", "now / before",
                            "ms mmap metadata (before)", "ms mmap metadata (now)"], rows)
    print(table)
    append_section("Checkpoint CRC-32 check", f"Median of {args.repeats}; the file in the page "
                   "cache.\n\n" + table)


if __name__ == "__main__":
    main()
