"""The architectures as lists of stages, read from the modules themselves (the report's Figures 1
and 2, and LeViT-UNet): a forward pass on PyTorch's ``meta`` device — shapes only, no memory, no
arithmetic — records every stage's output channels and spatial size, so a change to a model
changes its figure (:func:`lab2.report.figures.plot_architecture`)."""

from __future__ import annotations

import re

import torch

from ..models import build_model

#: Modules that are one stage of the diagram: encoder stages (UNet, LeViT-UNet's attention
#: stages), stem and layers (ResNet34-UNet), stem convolutions (LeViT-UNet), decoder blocks, the
#: output convolution.
STAGE_PATTERN = re.compile(r"encoder\.(stages\.\d+|relu|layer\d+|stem\.convs\.\d+)"
                           r"|decoder\.blocks\.\d+|head")


def _label(name: str, model: str) -> str:
    if name == "encoder.relu":
        return "stem 7×7/2"
    if name.startswith("encoder.stem.convs."):
        return f"conv 3×3/2 {int(name.rsplit('.', 1)[1]) + 1}"
    if name.startswith("encoder.stages."):
        index = int(name.rsplit(".", 1)[1])
        if model == "levit_unet":
            return f"attention stage {index + 1}" if index == 0 else \
                f"shrinking attention,\nattention stage {index + 1}"
        return "double conv" if index == 0 else f"pool + double conv {index}"
    if name.startswith("encoder.layer"):
        return f"layer {name[len('encoder.layer'):]}"
    if name.startswith("decoder.blocks."):
        return f"up-conv, concat,\ndouble conv {int(name.rsplit('.', 1)[1]) + 1}"
    return "output conv"


def architecture_stages(model: str, size: int = 512, **kwargs) -> list[dict]:
    """Each stage of network ``model`` for a (1, 3, size, size) input, in forward order:
    ``{"name", "label", "part", "channels", "height", "width", "parameters"}``; a last
    ``output`` stage when the network resizes its logits (ResNet34-UNet's bilinear upsampling)."""
    with torch.device("meta"):
        network = build_model(model, **kwargs)
    modules = dict(network.named_modules())
    names = [n for n in modules if STAGE_PATTERN.fullmatch(n)]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [modules[n].register_forward_hook(
        lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape))) for n in names]
    try:
        with torch.no_grad():
            output = network(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    stages = []
    for n in sorted(names, key=list(shapes).index):     # the order the forward pass ran them
        if len(shapes[n]) == 3:                          # tokens (B, N, C) of a square grid
            _, tokens, channels = shapes[n]
            height = width = int(round(tokens ** 0.5))
        else:
            _, channels, height, width = shapes[n]
        part = n.split(".")[0] if n != "head" else "head"
        # the stem's parameters are conv1's and bn1's, before this ReLU
        owners = ("encoder.conv1", "encoder.bn1") if n == "encoder.relu" else (n,)
        own = sum(p.numel() for m in owners for p in modules[m].parameters())
        stages.append({"name": n, "label": _label(n, model), "part": part, "channels": channels,
                       "height": height, "width": width, "parameters": own})
    if tuple(output.shape[-2:]) != (stages[-1]["height"], stages[-1]["width"]):
        stages.append({"name": "output", "label": "bilinear upsampling", "part": "output",
                       "channels": output.shape[1], "height": output.shape[2],
                       "width": output.shape[3], "parameters": 0})
    return stages


__all__ = ["architecture_stages"]
