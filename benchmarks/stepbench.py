"""Shared by train_step.py and gpu.py: the networks compared, and one timed training step.

A training step is forward + cross-entropy + backward + Adam step, on fixed random inputs.
FLOPs of a step are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions,
transposed convolutions and matrix products, forward and backward); achieved GFLOP/s = counted
FLOPs / measured seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lab2.models import build_model


class TextbookUNet(nn.Module):
    """A plain UNet as tutorials write it (Ronneberger et al. with padding and BatchNorm, no
    dropout, 1×1 head): the peer lab2's UNet is compared with."""

    def __init__(self, n_classes: int = 2, base: int = 64):
        super().__init__()

        def double(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),
                                 nn.ReLU(inplace=True), nn.Conv2d(o, o, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(o), nn.ReLU(inplace=True))
        w = [base * 2**i for i in range(5)]
        self.downs = nn.ModuleList([double(3, w[0])] + [double(w[i - 1], w[i]) for i in range(1, 5)])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2)
                                 for i in reversed(range(4)))
        self.convs = nn.ModuleList(double(2 * w[i], w[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(w[0], n_classes, 1)

    def forward(self, x):
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, conv in zip(self.ups, self.convs):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def build(name: str) -> nn.Module:
    if name == "textbook_unet":
        return TextbookUNet()
    if name == "smp_unet_resnet34":
        import segmentation_models_pytorch as smp  # optional: pip install -e .[bench]
        return smp.Unet("resnet34", encoder_weights=None, classes=2)
    return build_model(name)


@dataclass
class StepResult:
    name: str
    images_per_s: float
    gflops_per_step: float
    achieved_gflops: float
    peak_memory_gib: float | None


def step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_train_step(name: str, model: nn.Module, batch: int, size: int, *, device: str = "cpu",
                    channels_last: bool = False, amp: torch.dtype | None = None,
                    compile: bool = False, steps: int = 3, warmup: int = 1,
                    fused_adam: bool = True) -> StepResult:
    """Images/s and achieved GFLOP/s of the training step of ``model`` (moved to ``device``)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch, size, size), device=device)
    flops = step_flops(model, x, y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_adam)
    run = torch.compile(model) if compile else model

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=amp or torch.float32,
                            enabled=amp is not None):
            loss = F.cross_entropy(run(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    cuda = device.startswith("cuda")
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return StepResult(name, batch / seconds, flops / 1e9, flops / 1e9 / seconds, memory)
