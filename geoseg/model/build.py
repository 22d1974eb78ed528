"""One way to build any of the three networks by the name a model card stores in ``architecture``.

Each network keeps its own module (``manet.py``, ``macunet.py``, ``maresunet.py``, torchvision style);
this file only dispatches, so loading, training and benchmarks never switch on the architecture themselves.
"""

from __future__ import annotations

from torch import nn

from geoseg.errors import ConfigurationError
from geoseg.model.card import ARCHITECTURES, DEFAULT_BACKBONES
from geoseg.model.macunet import build_macunet
from geoseg.model.manet import build_manet
from geoseg.model.maresunet import build_maresunet

NETWORK_NAMES = {"manet": "MANet", "macunet": "MACU-Net", "maresunet": "MAResU-Net"}


def network_label(architecture: str, backbone: str | None) -> str:
    """How messages name a network: ``MANet (resnet50)``, ``MACU-Net``, ``MAResU-Net (resnet34)``."""
    name = NETWORK_NAMES.get(architecture, architecture)
    return f"{name} ({backbone})" if backbone else name


def build_model(
    architecture: str, num_classes: int, *, backbone: str | None = None, in_channels: int = 3
) -> nn.Module:
    """A randomly initialised ``manet``, ``macunet`` or ``maresunet`` (nothing is downloaded).

    ``backbone`` None takes the architecture's default (MANet: resnet50; MAResU-Net: its only one,
    resnet34; MACU-Net has none). Every network takes ``in_channels`` bands; the published MANet and
    MAResU-Net take 3, and other counts get a stem of their own width.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigurationError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    backbone = backbone if backbone is not None else DEFAULT_BACKBONES[architecture]
    if backbone not in ARCHITECTURES[architecture]:
        allowed = ", ".join(str(b) for b in ARCHITECTURES[architecture] if b) or "none"
        raise ConfigurationError(
            f"{NETWORK_NAMES[architecture]} cannot have backbone {backbone!r} (allowed: {allowed})"
        )
    if architecture == "manet":
        return build_manet(num_classes, backbone, in_channels=in_channels)
    if architecture == "macunet":
        return build_macunet(num_classes, in_channels=in_channels)
    return build_maresunet(num_classes, in_channels=in_channels)
