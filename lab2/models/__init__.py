"""lab2's networks and the ``build_model`` registry.

==================  ==========================================  =====================
 name                class                                       input sides multiple of
==================  ==========================================  =====================
 ``unet``            :class:`lab2.models.unet.UNet`              16
 ``resnet34_unet``   :class:`lab2.models.resnet34_unet.ResNet34UNet`  32
 ``levit_unet``      :class:`lab2.models.levit_unet.LeViTUNet`   64 (and one size per network)
==================  ==========================================  =====================
"""

from __future__ import annotations

from torch import nn

from .blocks import DEFAULT_DROPOUT
from .levit_unet import LeViTUNet
from .resnet34_unet import ResNet34UNet
from .unet import UNet

MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "resnet34_unet": ResNet34UNet,
                                      "levit_unet": LeViTUNet}
#: How tables and messages name each network.
TITLES = {"unet": "UNet", "resnet34_unet": "ResNet34-UNet", "levit_unet": "LeViT-UNet"}


def build_model(name: str, n_classes: int = 2, **kwargs) -> nn.Module:
    """Build a network by name; ``kwargs`` go to its constructor (e.g. ``dropout=0.2``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name](n_classes=n_classes, **kwargs)


#: Image channels the network sees for each ``TrainConfig.input`` (lab2.preprocess.network_input).
INPUT_CHANNELS = {"rgb": 3, "gray": 1, "edges": 4}


def model_for(config) -> nn.Module:
    """The network a :class:`lab2.config.TrainConfig` (or anything with its ``model``,
    ``base_channels``, ``dropout``, ``dropout_kind``, ``input`` and ``image_size`` fields)
    describes, freshly initialised."""
    sized = {"image_size": config.image_size} if config.model == "levit_unet" else {}
    return build_model(config.model, base_channels=config.base_channels, dropout=config.dropout,
                       dropout_kind=config.dropout_kind,
                       in_channels=INPUT_CHANNELS[getattr(config, "input", "rgb")], **sized)


def size_multiple(name: str) -> int:
    """Image sides for model ``name`` must be multiples of this."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name].multiple


__all__ = ["DEFAULT_DROPOUT", "INPUT_CHANNELS", "MODELS", "TITLES", "LeViTUNet", "ResNet34UNet",
           "UNet", "build_model", "model_for", "size_multiple"]
