"""LeViT-UNet, after Xu et al., "LeViT-UNet: Make Faster Encoders with Transformer for Medical Image
Segmentation" (2021): the encoder is LeViT-128S (Graham et al., "LeViT: a Vision Transformer in
ConvNet's Clothing for Faster Inference", ICCV 2021), the decoder lab2's UNet decoder — the report's
first proposal for future work ("a Transformer encoder"), trained from scratch like the other two.

=============================  ==========================  ========================================
 LeViT-UNet (paper, code)       LeViT-128S                  here
=============================  ==========================  ========================================
 convolutional stem: four 3×3   the same (the patch         :class:`ConvStem`: ``Conv2d_BN`` ×4,
 convs, stride 2, each with     embedding), 3 → 16 → 32 →   Hardswish between; its maps at /2, /4,
 BN, Hardswish between          64 → 128 channels           /8 are the decoder's skips
 attention with a learned bias  stage widths 128, 256, 384; :class:`Attention`: keys of 16, values
 per head and relative offset   4, 6, 8 heads; 2, 3, 4      of 32, ``attention_biases`` indexed by
 (no position embedding)        blocks                      the offset of each pair of positions
 MLP after each attention       ×2 width, Hardswish         :func:`mlp`
 "shrinking attention" between  queries from every other    :class:`SubsampleAttention`: queries
 stages: resolution /2          position; 4 × the values    of the /2 grid attend to the full grid
 decoder: bilinear upsampling,  —                           lab2's :class:`UNetDecoder` (transposed
 concat of all stages, convs                                conv, dropout, concat, double conv) on
                                                            the six maps /2 … /64, as ResNet34-UNet
 head: 3×3 conv, ×2 bilinear    —                           1×1 conv, then bilinear to the input
=============================  ==========================  ========================================

Parameters, checked against the authors' code (github.com/apple1986/LeViT-UNet,
``LeViT-UNet-128s.py`` built with timm 0.6.13 and torch 2.14.1, outside lab2, at their settings:
224×224 inputs, 1 input channel, 2 classes): 15,895,636 in all, of which their encoder (``cnn_b1``
to ``cnn_b4`` and ``block_1`` to ``block_3``) 7,005,234 and their decoder 8,890,402.
:class:`LeViTEncoder` at the same settings has 7,005,234 (``tests/test_models.py`` asserts it).
lab2's decoder is the UNet decoder of the other two networks, fed the same six maps the authors'
decoder uses (the stem's three, the three stages'): the comparison of the three networks then
differs in the encoder alone. At lab2's settings (3 channels, 2 classes, 512 px) the encoder has
7,027,344 parameters (the attention biases grow with the grid), the decoder 2,926,768 and the
head 34: 9.95 M in all, against UNet's 31.0 M and ResNet34-UNet's 85.9 M.

The attention biases are learned per pair of positions of a grid, so a LeViT-UNet is built for one
input size (``image_size``): a multiple of 64 (the stem's /16 then two /2 stages), e.g. the
profiles' 512, 128 and 64. The width factor of the profiles (``base_channels`` / 64) multiplies
the stem and every stage's width and number of heads (at least one head); keys stay 16 wide.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    DEFAULT_DROPOUT,
    DEFAULT_DROPOUT_KIND,
    UNetDecoder,
    check_input_size,
    check_model_args,
)

__all__ = ["LEVIT_128S", "LeViTEncoder", "LeViTUNet"]

#: LeViT-128S: stage widths, heads, blocks per stage, key width; the attention's and the MLP's
#: width ratios; shrinking attention between stages with heads = width / 16, values 4 × keys.
LEVIT_128S = dict(widths=(128, 256, 384), heads=(4, 6, 8), depths=(2, 3, 4), key_dim=16,
                  attn_ratio=2, mlp_ratio=2, subsample_attn_ratio=4)


class Conv2dBN(nn.Sequential):
    """A bias-free convolution and its BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 2):
        super().__init__(nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2,
                                   bias=False),
                         nn.BatchNorm2d(c_out))


class LinearBN(nn.Module):
    """A bias-free linear layer on tokens (B, N, C) and a BatchNorm over every token's channels;
    ``zero``: the BatchNorm starts at 0, so a residual branch starts as the identity."""

    def __init__(self, c_in: int, c_out: int, zero: bool = False):
        super().__init__()
        self.linear = nn.Linear(c_in, c_out, bias=False)
        self.bn = nn.BatchNorm1d(c_out)
        nn.init.constant_(self.bn.weight, 0.0 if zero else 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)                               # (B, N, C_out)
        if self.training and x.shape[0] * x.shape[1] == 1:
            # one token of one image (a 64-pixel input's last stage, a batch of one) has no batch
            # statistics: normalise it with the running ones, as evaluation does
            return F.batch_norm(x.flatten(0, 1), self.bn.running_mean, self.bn.running_var,
                                self.bn.weight, self.bn.bias, False, 0.0,
                                self.bn.eps).reshape_as(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


def mlp(width: int, ratio: int) -> nn.Sequential:
    return nn.Sequential(LinearBN(width, width * ratio), nn.Hardswish(),
                         LinearBN(width * ratio, width, zero=True))


def offset_index(queries: list[tuple[int, int]], keys: list[tuple[int, int]]
                 ) -> tuple[torch.Tensor, int]:
    """For each (query, key) pair of grid positions, the index of their offset (|dy|, |dx|) among
    the distinct offsets — which learned bias the pair's attention gets — (Nq, Nk) long, and the
    number of distinct offsets."""
    offsets: dict[tuple[int, int], int] = {}
    index = [offsets.setdefault((abs(qy - ky), abs(qx - kx)), len(offsets))
             for qy, qx in queries for ky, kx in keys]
    return torch.tensor(index).view(len(queries), len(keys)), len(offsets)


def grid(side: int, stride: int = 1) -> list[tuple[int, int]]:
    return [(y * stride, x * stride) for y, x in itertools.product(range(side), range(side))]


class Attention(nn.Module):
    """Multi-head self-attention on a grid of side ``side`` with one learned bias per head and
    relative offset (LeViT's "attention bias", in place of a position embedding)."""

    def __init__(self, width: int, key_dim: int, heads: int, attn_ratio: int, side: int):
        super().__init__()
        self.heads, self.key_dim, self.value_dim = heads, key_dim, attn_ratio * key_dim
        self.scale = key_dim ** -0.5
        self.qkv = LinearBN(width, heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Sequential(nn.Hardswish(), LinearBN(heads * self.value_dim, width,
                                                           zero=True))
        index, offsets = offset_index(grid(side), grid(side))
        self.attention_biases = nn.Parameter(torch.zeros(heads, offsets))
        self.register_buffer("bias_index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape                                             # (B, N, C)
        q, k, v = self.qkv(x).view(b, n, self.heads, -1).split(
            [self.key_dim, self.key_dim, self.value_dim], dim=3)      # (B, N, H, d) each
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)   # (B, H, N, d)
        bias = self.attention_biases[:, self.bias_index]             # (H, N, N)
        attention = (q @ k.transpose(-2, -1)) * self.scale + bias
        x = (attention.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)  # (B, N, H·dv)
        return self.proj(x)


class SubsampleAttention(nn.Module):
    """LeViT's shrinking attention between stages: queries from every other position of the
    grid (side ``side`` → ``(side - 1) // 2 + 1``) attend to every position; the width changes
    from ``c_in`` to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, key_dim: int, heads: int, attn_ratio: int,
                 side: int):
        super().__init__()
        self.heads, self.key_dim, self.value_dim = heads, key_dim, attn_ratio * key_dim
        self.scale = key_dim ** -0.5
        self.side, self.side_out = side, (side - 1) // 2 + 1
        self.kv = LinearBN(c_in, heads * (key_dim + self.value_dim))
        self.q = LinearBN(c_in, heads * key_dim)
        self.proj = nn.Sequential(nn.Hardswish(), LinearBN(heads * self.value_dim, c_out))
        index, offsets = offset_index(grid(self.side_out, stride=2), grid(side))
        self.attention_biases = nn.Parameter(torch.zeros(heads, offsets))
        self.register_buffer("bias_index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape                                             # (B, N, C_in)
        k, v = self.kv(x).view(b, n, self.heads, -1).split([self.key_dim, self.value_dim], 3)
        k, v = k.transpose(1, 2), v.transpose(1, 2)                   # (B, H, N, d)
        x_sub = x.view(b, self.side, self.side, c)[:, ::2, ::2].reshape(b, -1, c)  # (B, N/4, C)
        q = self.q(x_sub).view(b, -1, self.heads, self.key_dim).transpose(1, 2)
        bias = self.attention_biases[:, self.bias_index]             # (H, N/4, N)
        attention = (q @ k.transpose(-2, -1)) * self.scale + bias
        x = (attention.softmax(-1) @ v).transpose(1, 2).reshape(b, -1, self.heads * self.value_dim)
        return self.proj(x)                                           # (B, N/4, C_out)


class Residual(nn.Module):
    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class ConvStem(nn.Module):
    """Four 3×3 stride-2 convolutions with BatchNorm, Hardswish between them: /16 of the input,
    keeping the maps at /2, /4 and /8 for the decoder."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        widths = [in_channels, width // 8, width // 4, width // 2, width]
        self.convs = nn.ModuleList(Conv2dBN(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self.act(x)
            maps.append(x)                                            # /2, /4, /8, /16
        return maps


class LeViTEncoder(nn.Module):
    """LeViT-128S (or a narrower one) as a UNet encoder: six feature maps from fine to coarse,
    (B, w/8, H/2, W/2), (B, w/4, H/4, W/4), (B, w/2, H/8, W/8) from the stem and (B, C_s, H/2^s,
    W/2^s) for the three attention stages at /16, /32 and /64; ``out_channels`` lists their
    widths (segmentation_models_pytorch's encoder contract, as :class:`ResNetEncoder`)."""

    def __init__(self, in_channels: int = 3, image_size: int = 512, width: float = 1.0,
                 widths=LEVIT_128S["widths"], heads=LEVIT_128S["heads"],
                 depths=LEVIT_128S["depths"], key_dim: int = LEVIT_128S["key_dim"],
                 attn_ratio: int = LEVIT_128S["attn_ratio"],
                 mlp_ratio: int = LEVIT_128S["mlp_ratio"],
                 subsample_attn_ratio: int = LEVIT_128S["subsample_attn_ratio"]):
        super().__init__()
        widths = [max(8, int(round(c * width / 8)) * 8) for c in widths]
        heads = [max(1, round(h * width)) for h in heads]
        self.stem = ConvStem(in_channels, widths[0])
        side = image_size // 16
        self.stages = nn.ModuleList()
        for i, (c, h, depth) in enumerate(zip(widths, heads, depths, strict=True)):
            blocks: list[nn.Module] = []
            if i > 0:     # shrinking attention from the previous stage, then its MLP
                blocks += [SubsampleAttention(widths[i - 1], c, key_dim,
                                              max(1, widths[i - 1] // key_dim),
                                              subsample_attn_ratio, side),
                           Residual(mlp(c, mlp_ratio))]
                side = (side - 1) // 2 + 1
            for _ in range(depth):
                blocks += [Residual(Attention(c, key_dim, h, attn_ratio, side)),
                           Residual(mlp(c, mlp_ratio))]
            self.stages.append(nn.Sequential(*blocks))
        self.image_size = image_size
        self.out_channels = [widths[0] // 8, widths[0] // 4, widths[0] // 2, *widths]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        *maps, x = self.stem(x)                        # /2, /4, /8 and (B, C0, H/16, W/16)
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)          # (B, N, C0)
        for stage in self.stages:
            tokens = stage(tokens)                     # (B, N', C_s)
            maps.append(tokens.transpose(1, 2).reshape(b, tokens.shape[2], h, w))
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        return maps


class LeViTUNet(nn.Module):
    """LeViT-UNet: (B, in_channels, S, S) → logits (B, n_classes, S, S), for one size S
    (``image_size``, a multiple of 64: the attention biases are learned per grid position).

    Args:
        in_channels: image channels (3; 1 for ``--input gray``, 4 for ``--input edges``).
        n_classes: output channels (2).
        dropout, dropout_kind: the decoder's dropout, as in the other two networks (the encoder
            has none, as LeViT-UNet's).
        base_channels: width: 64 is LeViT-128S; the profiles' 16 and 8 scale it (module
            docstring).
        image_size: the side S of every input.
    """

    multiple = 64

    def __init__(self, in_channels: int = 3, n_classes: int = 2, dropout: float = DEFAULT_DROPOUT,
                 base_channels: int = 64, dropout_kind: str = DEFAULT_DROPOUT_KIND,
                 image_size: int = 512):
        super().__init__()
        check_model_args(n_classes, base_channels, dropout)
        if image_size % self.multiple:
            nearest = max(self.multiple, round(image_size / self.multiple) * self.multiple)
            raise ValueError(f"LeViT-UNet needs an image size that is a multiple of 64 (its "
                             f"attention grid halves twice after a /16 stem); {image_size} is "
                             f"not: the nearest is {nearest}")
        self.encoder = LeViTEncoder(in_channels, image_size, width=base_channels / 64)
        self.decoder = UNetDecoder(self.encoder.out_channels, dropout, dropout_kind)
        self.head = nn.Conv2d(self.decoder.out_channels, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.multiple, "LeViT-UNet")
        if x.shape[-1] != self.encoder.image_size or x.shape[-2] != self.encoder.image_size:
            raise ValueError(f"this LeViT-UNet was built for {self.encoder.image_size}x"
                             f"{self.encoder.image_size} inputs (its attention biases are "
                             f"learned per grid position), got {x.shape[-2]}x{x.shape[-1]}; "
                             "resize the images or build it with that image_size")
        features = self.encoder(x)       # 6 maps, (B, 16, H/2, W/2) ... (B, 384, H/64, W/64)
        y = self.decoder(features)       # (B, 16, H/2, W/2)
        y = self.head(y)                 # (B, n_classes, H/2, W/2)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
