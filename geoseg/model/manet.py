"""MANet (Li et al., "Multi-Attention-Network for Semantic Segmentation of Fine-Resolution Remote Sensing
Images", IEEE TGRS 2021), faithful to the published network and its checkpoints.

Reads top-down: the attention block, the model, the builder; the kernel and channel attention, the encoder
and the LinkNet decoder live in :mod:`geoseg.model.layers`. Module names follow the authors' original
repository (``firstconv``, ``encoder1..4``, ``attention1..4.PAM/CAM``, ``decoder1..4``, ``finaldeconv1``...)
so their state dicts load without renaming. The encoder is a torchvision ResNet built without weights:
nothing is ever downloaded.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tv_models

from geoseg.errors import ConfigurationError
from geoseg.model.architectures import ARCHITECTURES, RESNET_CHANNELS
from geoseg.model.layers import (
    ChannelAttention,
    KernelAttention,
    attach_linknet_decoder,
    attach_resnet_encoder,
    check_input_size,
    check_network_arguments,
    decode_linknet,
    encode_resnet,
)

SPEC = ARCHITECTURES["manet"]


class AttentionBlock(nn.Module):
    """PAM(x) + CAM(x): both keep their own identity, so x is counted twice, as published."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.PAM = KernelAttention(channels)
        self.CAM = ChannelAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.PAM(x) + self.CAM(x)


class MANet(nn.Module):
    """ResNet encoder, kernel + channel attention on every stage, LinkNet decoder, full-resolution logits."""

    def __init__(self, num_classes: int, backbone: str | None = None, in_channels: int = 3) -> None:
        super().__init__()
        backbone = SPEC.default_backbone if backbone is None else backbone
        if backbone not in SPEC.backbones:
            raise ConfigurationError(
                f"unknown backbone {backbone!r}; choose one of {', '.join(map(str, SPEC.backbones))}"
            )
        check_network_arguments(num_classes, in_channels)
        self.backbone_name = backbone
        self.num_classes = num_classes
        c1, c2, c3, c4 = RESNET_CHANNELS[backbone]
        resnet = getattr(tv_models, backbone)(weights=None)
        attach_resnet_encoder(self, resnet, in_channels)

        self.attention4 = AttentionBlock(c4)
        self.attention3 = AttentionBlock(c3)
        self.attention2 = AttentionBlock(c2)
        self.attention1 = AttentionBlock(c1)
        attach_linknet_decoder(self, (c1, c2, c3, c4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, SPEC.input_multiple, SPEC.label)
        e1, e2, e3, e4 = encode_resnet(self, x)  # stem and stages 1-2 in float32 under autocast
        return decode_linknet(self, e1, e2, e3, e4)


def build_manet(num_classes: int, backbone: str | None = None, *, in_channels: int = 3) -> MANet:
    """A randomly initialised MANet (attention gammas start at zero, as published); ``backbone`` None is
    resnet50."""
    return MANet(num_classes=num_classes, backbone=backbone, in_channels=in_channels)
