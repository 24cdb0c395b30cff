"""UNet, after Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597), as modified by the lab report.

=============================  ==========================  ========================================
 report (docs/report.md, UNet) paper                       here
=============================  ==========================  ========================================
 double conv: 2 × (3×3 conv,    2 × (3×3 unpadded conv,     :class:`DoubleConv`: conv3x3 (padding 1)
 stride 1, padding 1 → BN →     ReLU); no BatchNorm         → BatchNorm → ReLU, twice; size kept
 ReLU); size unchanged
 dropout after the second conv  dropout only at the         ``nn.Dropout`` (or channel-wise
 of every block                 end of the contracting path ``Dropout2d``) closing every DoubleConv
 dropout after every up-conv    —                           ``UpBlock.dropout``
 encoder 64→128→256→512→1024,   same widths, 2×2 max-pool   ``UNetEncoder``: 5 stages, 4 max-pools
 2×2 max-pool between stages
 decoder: ConvTranspose2d       2×2 up-conv halving the     ``UpBlock``: ConvTranspose2d(k=2, s=2)
 (stride 2), concat the         channels, crop and concat   halving channels, concat (no crop: same
 same-stage encoder map,                                    size thanks to padding), DoubleConv
 double conv
 final 3×3 conv to n_classes    final 1×1 conv              ``head``: 3×3 conv (padding 1)
=============================  ==========================  ========================================

Inputs must have sides that are multiples of 16 (four 2× poolings).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import (
    DEFAULT_DROPOUT,
    DEFAULT_DROPOUT_KIND,
    DoubleConv,
    UNetDecoder,
    check_input_size,
    check_model_args,
)

__all__ = ["UNet", "UNetEncoder"]


class UNetEncoder(nn.Module):
    """Contracting path: DoubleConv, then 4 × (2×2 max-pool → DoubleConv), doubling the width.

    Returns the 5 stage outputs, fine to coarse; ``out_channels`` lists their widths.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64,
                 dropout: float = DEFAULT_DROPOUT, depth: int = 4,
                 dropout_kind: str = DEFAULT_DROPOUT_KIND):
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]   # 64, 128, 256, 512, 1024
        self.stages = nn.ModuleList([DoubleConv(in_channels, widths[0], dropout, dropout_kind)])
        for i in range(1, depth + 1):
            self.stages.append(nn.Sequential(nn.MaxPool2d(2), DoubleConv(
                widths[i - 1], widths[i], dropout, dropout_kind)))
        self.out_channels = tuple(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)           # (B, C_i, H / 2^i, W / 2^i)
            features.append(x)
        return features


class UNet(nn.Module):
    """The report's UNet: (B, in_channels, H, W) → logits (B, n_classes, H, W).

    Args:
        in_channels: image channels (3).
        n_classes: output channels (2: background, pet — the report's cross-entropy setup).
        base_channels: width of the first stage; every stage scales with it. The report's network
            is 64; smaller values exist for quick CPU runs.
        dropout: probability of every dropout layer (see :data:`DEFAULT_DROPOUT`).
        dropout_kind: ``"element"`` (``nn.Dropout``, the report's) or ``"channel"``
            (``nn.Dropout2d``; see :func:`lab2.models.blocks.dropout_layer`).
    """

    multiple = 16

    def __init__(self, in_channels: int = 3, n_classes: int = 2, base_channels: int = 64,
                 dropout: float = DEFAULT_DROPOUT, dropout_kind: str = DEFAULT_DROPOUT_KIND):
        super().__init__()
        check_model_args(n_classes, base_channels, dropout)
        self.encoder = UNetEncoder(in_channels, base_channels, dropout,
                                   dropout_kind=dropout_kind)
        self.decoder = UNetDecoder(self.encoder.out_channels, dropout, dropout_kind)
        self.head = nn.Conv2d(self.decoder.out_channels, n_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.multiple, "UNet")
        features = self.encoder(x)       # 5 maps, (B, 64, H, W) ... (B, 1024, H/16, W/16)
        y = self.decoder(features)       # (B, 64, H, W)
        return self.head(y)              # (B, n_classes, H, W)
