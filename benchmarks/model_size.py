"""Parameters and forward GMACs of lab2's networks at the report's 512×512.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed
convolutions and matrix products; element-wise ops such as BatchNorm and ReLU are not counted) on
the meta device, so nothing is computed; GMACs = FLOPs / 2.

    python benchmarks/model_size.py [--size 512]
"""

from __future__ import annotations

import argparse

import torch
from results import append_section, markdown_table
from torch.utils.flop_counter import FlopCounterMode

from lab2.models import MODELS, build_model


def sized(name: str, size: int) -> dict:
    """LeViT-UNet is built for one input size (its attention biases)."""
    return {"image_size": size} if name == "levit_unet" else {}


def forward_macs(name: str, size: int) -> int:
    with torch.device("meta"):
        model = build_model(name, **sized(name, size))
        x = torch.empty(1, 3, size, size)
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
    return counter.get_total_flops() // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    rows = []
    for name in MODELS:
        params = sum(p.numel() for p in build_model(name, **sized(name, args.size)).parameters())
        rows.append((name, f"{params:,}", f"{forward_macs(name, args.size) / 1e9:.1f}"))
    table = markdown_table(("model", "parameters",
                            f"forward GMACs at {args.size}x{args.size}, batch 1"),
                           rows)
    print(table)
    append_section("Model size and cost", table + "\n\nTool: "
                   "torch.utils.flop_counter.FlopCounterMode (conv/matmul only), meta device.")


if __name__ == "__main__":
    main()
