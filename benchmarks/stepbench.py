"""Shared by train_step.py and gpu.py: the networks compared, and one timed training step.

A training step is forward + cross-entropy + backward + Adam step, on fixed random inputs.
FLOPs of a step are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions,
transposed convolutions and matrix products, forward and backward); achieved GFLOP/s = counted
FLOPs / measured seconds.
"""

from __future__ import annotations

import statistics
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
        self.downs = nn.ModuleList([double(3, w[0])] +
                                   [double(w[i - 1], w[i]) for i in range(1, 5)])
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
        for up, conv in zip(self.ups, self.convs, strict=True):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def build(name: str) -> nn.Module:
    if name == "textbook_unet":
        return TextbookUNet()
    if name == "unet_dropout0":  # lab2's UNet without its dropout layers, to price them
        return build_model("unet", dropout=0.0)
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
    warmup_s: float = 0.0   # wall time of the untimed first steps (cudnn autotuning, compilation)


def step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


class TrainStep:
    """One model's training step on fixed random inputs, ready to be timed repeatedly."""

    def __init__(self, name: str, model: nn.Module, batch: int, size: int, *,
                 device: str = "cpu", channels_last: bool = False,
                 amp: torch.dtype | None = None, compile: bool = False,
                 sync_loss: bool = False):
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.name, self.batch, self.device, self.amp = name, batch, device, amp
        self.sync_loss = sync_loss   # read the loss on the host every step (lab2's loop before)
        self.model = model.to(device, memory_format=fmt).train()
        self.x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 2, (batch, size, size), device=device)
        self.flops = step_flops(self.model, self.x, self.y)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        self.run = torch.compile(self.model) if compile else self.model
        self.cuda = device.startswith("cuda")
        self.seconds: list[float] = []

    def step(self) -> None:
        with torch.autocast(device_type=self.device.split(":")[0],
                            dtype=self.amp or torch.float32, enabled=self.amp is not None):
            loss = F.cross_entropy(self.run(self.x).float(), self.y)
        if self.sync_loss and not torch.isfinite(loss):
            raise FloatingPointError("non-finite loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def timed(self, steps: int = 1) -> float:
        """Run ``steps`` steps; record and return the seconds per step."""
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds.append((time.perf_counter() - start) / steps)
        return self.seconds[-1]

    def result(self, warmup_s: float = 0.0) -> StepResult:
        """Median of the recorded timings."""
        seconds = statistics.median(self.seconds)
        memory = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        return StepResult(self.name, self.batch / seconds, self.flops / 1e9,
                          self.flops / 1e9 / seconds, memory, warmup_s)


def time_train_step(name: str, model: nn.Module, batch: int, size: int, *, steps: int = 3,
                    warmup: int = 1, **kwargs) -> StepResult:
    """Warm up, then time ``steps`` steps of one model (see :class:`TrainStep`)."""
    bench = TrainStep(name, model, batch, size, **kwargs)
    start = time.perf_counter()
    for _ in range(warmup):
        bench.step()
    if bench.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_s = time.perf_counter() - start
    for _ in range(steps):
        bench.timed()
    return bench.result(warmup_s)
