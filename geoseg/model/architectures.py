"""The networks geoseg builds, as data: one entry per value a model card's ``architecture`` may hold.

Everything that depends on the architecture reads it here: the card's validation, presets, the CLI's
choices, training and the tile grid (the input multiple), and :func:`geoseg.model.build.build_model`. The
module imports no torch (each builder is named by its import path and imported on first use), so cards and
command-line parsing stay light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geoseg.errors import ConfigurationError

if TYPE_CHECKING:
    from torch import nn

# torchvision ResNet -> channels of its four stages (strides 4, 8, 16, 32), which size the decoder
RESNET_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


@dataclass(frozen=True)
class Architecture:
    """What must be known about a network before any of its weights exist."""

    name: str  # the card's ``architecture`` value
    label: str  # how messages name it
    backbones: tuple[str | None, ...]  # (None,): no exchangeable encoder
    default_backbone: str | None
    input_multiple: int  # height and width must be multiples of it: the network's total downsampling
    imagenet_normalization: bool  # the authors normalised with ImageNet's mean/std (else only ÷255)
    builder: str  # "module:function"; takes ``backbone=`` exactly when the network has backbones

    def resolve_backbone(self, backbone: str | None) -> str | None:
        """``backbone``, or the default when None; refuses one this network cannot have."""
        backbone = self.default_backbone if backbone is None else backbone
        if backbone not in self.backbones:
            allowed = ", ".join(str(b) for b in self.backbones if b) or "none"
            raise ConfigurationError(f"{self.label} cannot have backbone {backbone!r} (allowed: {allowed})")
        return backbone

    def build(self, num_classes: int, *, backbone: str | None = None, in_channels: int = 3) -> nn.Module:
        """A randomly initialised network (nothing is downloaded)."""
        backbone = self.resolve_backbone(backbone)
        module, function = self.builder.split(":")
        builder = getattr(importlib.import_module(module), function)
        options: dict[str, Any] = {} if self.backbones == (None,) else {"backbone": backbone}
        return builder(num_classes, in_channels=in_channels, **options)

    def check_tile(self, size: int, parameter: str = "tile") -> None:
        """Refuse a tile (or training ``crop``) this network cannot take, naming the parameter: the one
        check of predict, serve, export and train, with this network's input multiple."""
        multiple = self.input_multiple
        if size < multiple or size % multiple:
            lower = max(multiple, size // multiple * multiple)
            raise ConfigurationError(
                f"{parameter}={size}: give a positive multiple of {multiple} "
                f"({self.label}'s input multiple), e.g. {lower} or {lower + multiple}"
            )


ARCHITECTURES: dict[str, Architecture] = {
    spec.name: spec
    for spec in (
        Architecture(
            name="manet",
            label="MANet",
            backbones=tuple(RESNET_CHANNELS),
            default_backbone="resnet50",
            input_multiple=32,  # the ResNet encoder's output stride
            imagenet_normalization=True,
            builder="geoseg.model.manet:build_manet",
        ),
        Architecture(
            name="macunet",
            label="MACU-Net",
            backbones=(None,),
            default_backbone=None,
            input_multiple=16,  # four 2×2 max-pools, undone by exact 2× transposed convolutions
            imagenet_normalization=False,
            builder="geoseg.model.macunet:build_macunet",
        ),
        Architecture(
            name="maresunet",
            label="MAResU-Net",
            backbones=("resnet34",),
            default_backbone="resnet34",
            input_multiple=32,  # the ResNet encoder's output stride
            imagenet_normalization=False,
            builder="geoseg.model.maresunet:build_maresunet",
        ),
    )
}
# every backbone some network can have, for command-line choices
BACKBONES: tuple[str, ...] = tuple(
    dict.fromkeys(b for spec in ARCHITECTURES.values() for b in spec.backbones if b is not None)
)


def get_architecture(name: str) -> Architecture:
    """The registry's entry for ``name``, or an error listing the ones there are."""
    if name not in ARCHITECTURES:
        raise ConfigurationError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def network_label(architecture: str, backbone: str | None) -> str:
    """How messages name a network: ``MANet (resnet50)``, ``MACU-Net``, ``MAResU-Net (resnet34)``."""
    label = ARCHITECTURES[architecture].label if architecture in ARCHITECTURES else architecture
    return f"{label} ({backbone})" if backbone else label
