"""Building blocks shared by lab2's two networks: the double convolution and the UNet decoder.

Encoders in lab2 follow segmentation_models_pytorch's contract: ``encoder(x)`` returns a list of
feature maps from fine to coarse (each stage halves the resolution), and ``encoder.out_channels``
lists their channel counts. :class:`UNetDecoder` is built from those counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Dropout probability used by both networks unless the constructor says otherwise. The report
#: puts dropout in every block without giving its rate; 0.1 regularises without slowing the
#: from-scratch training the report does.
DEFAULT_DROPOUT = 0.1

#: Kinds of dropout: ``element`` (``nn.Dropout``, the report's literal "a Dropout layer") and
#: ``channel`` (``nn.Dropout2d``, whole feature maps).
DROPOUT_KINDS = ("element", "channel")
DEFAULT_DROPOUT_KIND = "element"


def dropout_layer(p: float, kind: str = DEFAULT_DROPOUT_KIND) -> nn.Module:
    """The dropout of every block: element-wise (``nn.Dropout``, the report's "a Dropout layer")
    or channel-wise (``nn.Dropout2d``, which zeroes whole feature maps).

    Element-wise dropout draws one random number per activation and cost lab2's UNet 25 % of its
    CPU training speed at 128 px; ``Dropout2d`` draws one per channel and cost 10 %
    (benchmarks/README.md), and suits convolutional features, whose neighbouring activations are
    strongly correlated (Tompson et al., CVPR 2015). The CPU profiles use it; ``full`` keeps the
    report's element-wise dropout.
    """
    if kind not in DROPOUT_KINDS:
        raise ValueError(f"dropout kind must be one of {', '.join(DROPOUT_KINDS)}, got {kind!r}")
    return nn.Dropout2d(p) if kind == "channel" else nn.Dropout(p)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class DoubleConv(nn.Sequential):
    """(3×3 conv → BatchNorm → ReLU) × 2 → dropout (probability ``p``). Spatial size unchanged."""

    def __init__(self, in_channels: int, out_channels: int, p: float = DEFAULT_DROPOUT,
                 dropout_kind: str = DEFAULT_DROPOUT_KIND):
        super().__init__(
            conv3x3(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            dropout_layer(p, dropout_kind),
        )


class UpBlock(nn.Module):
    """One decoder stage: 2×2 transposed conv (stride 2) → dropout → concatenate skip →
    DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 dropout: float = DEFAULT_DROPOUT, dropout_kind: str = DEFAULT_DROPOUT_KIND):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.dropout = dropout_layer(dropout, dropout_kind)
        self.conv = DoubleConv(out_channels + skip_channels, out_channels, dropout, dropout_kind)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)                    # (B, C_out, 2H, 2W)
        x = self.dropout(x)
        x = torch.cat([skip, x], dim=1)   # (B, C_skip + C_out, 2H, 2W)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """The UNet decoder: from the coarsest encoder map up to the finest, one :class:`UpBlock` per
    skip connection. Output has ``encoder_channels[0]`` channels at the finest map's resolution."""

    def __init__(self, encoder_channels: Sequence[int], dropout: float = DEFAULT_DROPOUT,
                 dropout_kind: str = DEFAULT_DROPOUT_KIND):
        super().__init__()
        channels = list(encoder_channels)
        # deepest first: e.g. 1024 → 512 (skip 512), 512 → 256 (skip 256), ...
        self.blocks = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i], dropout, dropout_kind)
            for i in reversed(range(len(channels) - 1))
        )
        self.out_channels = channels[0]

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1]), strict=True):
            x = block(x, skip)
        return x


def check_model_args(n_classes: int, base_channels: int, dropout: float) -> None:
    """Constructor checks shared by both networks."""
    if n_classes < 1 or base_channels < 1:
        raise ValueError(f"n_classes and base_channels must be positive, got {n_classes} "
                         f"and {base_channels}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def check_input_size(x: torch.Tensor, multiple: int, model: str) -> None:
    """Raise ValueError naming the nearest valid size when H or W is not a multiple of
    ``multiple``."""
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        nearest = [max(multiple, round(s / multiple) * multiple) for s in (h, w)]
        raise ValueError(
            f"{model} needs image sides that are multiples of {multiple}; got {h}x{w}. "
            f"The nearest valid size is {nearest[0]}x{nearest[1]}: resize or pad to it.")
