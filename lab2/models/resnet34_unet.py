"""ResNet34-UNet, after Huang et al., "A ResNet34-UNet model for segmentation" (2022), i.e. a
ResNet-34 encoder (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016)
under a UNet decoder (Ronneberger et al., 2015), as modified by the lab report.

=============================  ==========================  ========================================
 report (docs/report.md)        ResNet-34 / paper           here
=============================  ==========================  ========================================
 stem: 7×7 conv 3→64, stride    same, then 3×3 max-pool     ``conv1``/``bn1``/``relu``; no max-pool
 2, padding 3; no max-pool      stride 2                    anywhere in the encoder
 residual block: 2 × 3×3 conv   BasicBlock, no dropout      :class:`ResidualBlock` = torchvision's
 with BN, ReLU; shortcut added                              ``BasicBlock`` + ``Dropout2d`` after the
 before the last ReLU; 1×1                                  second conv (after its BN, before the
 conv on the shortcut when the                              add); shortcut ``downsample`` = 1×1 conv
 shape changes; dropout after                               + BN when the shape changes
 the second conv
 layers of 3, 4, 6, 3 blocks →  same four layers            ``layer1``–``layer4``, stride 2 in the
 64, 128, 256, 512; first conv                              first block of layers 2–5
 stride 2 in layers 2+
 extra fifth layer, 3 blocks →  —                           ``layer5``
 1024 (depth of the UNet)
 decoder as the UNet's          —                           :class:`UNetDecoder` (transposed conv,
                                                            dropout, concat, double conv) up to
                                                            layer 1's resolution (input / 2)
 1×1 conv to n_classes, then    —                           ``head`` then ``F.interpolate``
 bilinear to the input size                                 (bilinear) to the input size
=============================  ==========================  ========================================

The stem and ``layer1``–``layer4`` use torchvision's ResNet building blocks with the same parameter
names and shapes as ``torchvision.models.resnet34``, so its ImageNet weights load into them
(``encoder_weights``, a state dict — none by default: the report trains from scratch).

Inputs must have sides that are multiples of 32 (stem and four stride-2 layers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from .blocks import (
    DEFAULT_DROPOUT,
    DEFAULT_DROPOUT_KIND,
    UNetDecoder,
    check_input_size,
    check_model_args,
    conv1x1,
    dropout_layer,
)

__all__ = ["ResNet34UNet", "ResNetEncoder", "ResidualBlock", "RESNET34_LAYERS"]

#: Blocks per encoder layer: ResNet-34's [3, 4, 6, 3] plus the report's fifth layer of 3.
RESNET34_LAYERS = (3, 4, 6, 3, 3)


class ResidualBlock(BasicBlock):
    """torchvision's BasicBlock with dropout after the second convolution."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dropout: float = DEFAULT_DROPOUT,
                 dropout_kind: str = DEFAULT_DROPOUT_KIND):
        super().__init__(inplanes, planes, stride, downsample)
        self.dropout = dropout_layer(dropout, dropout_kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.dropout(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)
        return out


class ResNetEncoder(nn.Module):
    """ResNet encoder without max-pool: stem (7×7, stride 2) and one layer per entry of ``layers``.

    Returns the outputs of every layer, fine to coarse (layer 1 at input / 2, each later layer
    halving again); ``out_channels`` lists their widths.
    """

    def __init__(self, layers: tuple[int, ...] = RESNET34_LAYERS, in_channels: int = 3,
                 base_channels: int = 64, dropout: float = DEFAULT_DROPOUT,
                 dropout_kind: str = DEFAULT_DROPOUT_KIND):
        super().__init__()
        self.inplanes = base_channels
        self.dropout, self.dropout_kind = dropout, dropout_kind
        self.conv1 = nn.Conv2d(in_channels, base_channels, kernel_size=7, stride=2, padding=3,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        widths = [base_channels * 2**i for i in range(len(layers))]   # 64 ... 1024
        for i, (blocks, width) in enumerate(zip(layers, widths, strict=True), start=1):
            setattr(self, f"layer{i}", self._make_layer(width, blocks, stride=1 if i == 1 else 2))
        self.out_channels = tuple(widths)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride),
                                       nn.BatchNorm2d(planes))
        layers = [ResidualBlock(self.inplanes, planes, stride, downsample, self.dropout,
                                self.dropout_kind)]
        self.inplanes = planes
        layers += [ResidualBlock(planes, planes, dropout=self.dropout,
                                 dropout_kind=self.dropout_kind) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def layers(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i}") for i in range(1, len(self.out_channels) + 1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.conv1(x)          # (B, 64, H/2, W/2)
        x = self.bn1(x)
        x = self.relu(x)
        features = []
        for layer in self.layers:
            x = layer(x)           # (B, 64·2^i, H/2^(i+1), W/2^(i+1))
            features.append(x)
        return features


def load_resnet34_weights(encoder: ResNetEncoder, state: dict, source: str = "the weights"
                          ) -> None:
    """Load a torchvision ResNet-34 state dict (its ImageNet weights, say:
    :func:`lab2.ops.checkpoint.read_resnet34_weights` reads them from a file) into the stem and
    layers 1–4; its classifier (``fc``) is left out. lab2 never downloads weights itself."""
    if not isinstance(state, dict):
        raise ValueError(f"{source} is not a torchvision ResNet-34 state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as e:         # a tensor of another shape
        raise ValueError(f"{source} is not a torchvision ResNet-34 state dict "
                         f"({str(e).splitlines()[-1].strip()})") from None
    if unexpected or any(not k.startswith("layer5.") for k in missing):
        raise ValueError(f"{source} is not a torchvision ResNet-34 state dict "
                         f"(unexpected keys {unexpected[:3]}, missing {missing[:3]})")


class ResNet34UNet(nn.Module):
    """The report's ResNet34-UNet: (B, in_channels, H, W) → logits (B, n_classes, H, W).

    Args:
        in_channels: image channels (3).
        n_classes: output channels (2).
        dropout: probability of every dropout layer (see :data:`DEFAULT_DROPOUT`).
        dropout_kind: ``"element"`` (``nn.Dropout``, the report's) or ``"channel"``
            (``nn.Dropout2d``; see :func:`lab2.models.blocks.dropout_layer`).
        encoder_weights: ``None`` (train from scratch, as the report) or a torchvision
            ResNet-34 state dict for the encoder (see :func:`load_resnet34_weights`).
        base_channels: width of the stem and layer 1 (64 in ResNet-34). Smaller values exist for
            quick CPU runs and cannot take ImageNet weights.
    """

    multiple = 32

    def __init__(self, in_channels: int = 3, n_classes: int = 2, dropout: float = DEFAULT_DROPOUT,
                 encoder_weights: dict | None = None, base_channels: int = 64,
                 dropout_kind: str = DEFAULT_DROPOUT_KIND):
        super().__init__()
        check_model_args(n_classes, base_channels, dropout)
        if encoder_weights is not None and (base_channels != 64 or in_channels != 3):
            raise ValueError("encoder_weights needs the ResNet-34 shapes: base_channels=64 and "
                             "in_channels=3")
        self.encoder = ResNetEncoder(RESNET34_LAYERS, in_channels, base_channels, dropout,
                                     dropout_kind)
        if encoder_weights is not None:
            load_resnet34_weights(self.encoder, encoder_weights)
        self.decoder = UNetDecoder(self.encoder.out_channels, dropout, dropout_kind)
        self.head = nn.Conv2d(self.decoder.out_channels, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.multiple, "ResNet34-UNet")
        features = self.encoder(x)       # 5 maps, (B, 64, H/2, W/2) ... (B, 1024, H/32, W/32)
        y = self.decoder(features)       # (B, 64, H/2, W/2)
        y = self.head(y)                 # (B, n_classes, H/2, W/2)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
