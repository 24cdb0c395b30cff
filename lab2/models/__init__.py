"""lab2's networks and the ``build_model`` registry.

==================  ==========================================  =====================
 name                class                                       input sides multiple of
==================  ==========================================  =====================
 ``unet``            :class:`lab2.models.unet.UNet`              16
 ``resnet34_unet``   :class:`lab2.models.resnet34_unet.ResNet34UNet`  32
==================  ==========================================  =====================
"""

from __future__ import annotations

from torch import nn

from .blocks import DEFAULT_DROPOUT
from .resnet34_unet import ResNet34UNet
from .unet import UNet

MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "resnet34_unet": ResNet34UNet}
#: How tables and messages name each network.
TITLES = {"unet": "UNet", "resnet34_unet": "ResNet34-UNet"}


def build_model(name: str, n_classes: int = 2, **kwargs) -> nn.Module:
    """Build a network by name; ``kwargs`` go to its constructor (e.g. ``dropout=0.2``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name](n_classes=n_classes, **kwargs)


def model_for(config) -> nn.Module:
    """The network a :class:`lab2.config.TrainConfig` (or anything with its ``model``,
    ``base_channels``, ``dropout`` and ``dropout_kind`` fields) describes, freshly initialised."""
    return build_model(config.model, base_channels=config.base_channels, dropout=config.dropout,
                       dropout_kind=config.dropout_kind)


def size_multiple(name: str) -> int:
    """Image sides for model ``name`` must be multiples of this."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name].multiple


__all__ = ["DEFAULT_DROPOUT", "MODELS", "TITLES", "ResNet34UNet", "UNet", "build_model",
           "model_for", "size_multiple"]
