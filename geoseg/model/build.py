"""One way to build any network by the name a model card stores in ``architecture``.

Each network keeps its own module (``manet.py``, ``macunet.py``, ``maresunet.py``, torchvision style) and
its entry in :mod:`geoseg.model.architectures`; loading, training and benchmarks never switch on the
architecture themselves.
"""

from __future__ import annotations

from torch import nn

from geoseg.model.architectures import get_architecture


def build_model(
    architecture: str, num_classes: int, *, backbone: str | None = None, in_channels: int = 3
) -> nn.Module:
    """A randomly initialised ``manet``, ``macunet`` or ``maresunet`` (nothing is downloaded).

    ``backbone`` None takes the architecture's default (MANet: resnet50; MAResU-Net: its only one,
    resnet34; MACU-Net has none). Every network takes ``in_channels`` bands; the published MANet and
    MAResU-Net take 3, and other counts get a stem of their own width.
    """
    return get_architecture(architecture).build(num_classes, backbone=backbone, in_channels=in_channels)
