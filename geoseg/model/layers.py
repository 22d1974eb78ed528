"""Pieces every network file shares (in the timm style: layers apart from models)."""

from __future__ import annotations

import torch
from torch import nn

from geoseg.errors import ConfigurationError


def float32_region(x: torch.Tensor) -> tuple[torch.Tensor, torch.autocast]:
    """Attention in float32 even under bf16/fp16 autocast: its sums over all positions overflow in fp16."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    device_type = x.device.type if x.device.type in ("cuda", "mps", "xpu") else "cpu"
    return x, torch.autocast(device_type=device_type, enabled=False)


def check_network_arguments(num_classes: int, in_channels: int) -> None:
    """Refuse a class or band count no network can be built for, before any layer is allocated."""
    if num_classes < 1:
        raise ConfigurationError(f"num_classes must be at least 1, got {num_classes}")
    if in_channels < 1:
        raise ConfigurationError(f"in_channels must be at least 1, got {in_channels}")


def check_input_size(x: torch.Tensor, multiple: int, network: str) -> None:
    """Refuse a height or width the network cannot take, naming the padded size that would work.

    Without it a wrong size fails deep inside the network (a ``torch.cat`` of mismatched skips) or, worse,
    silently returns logits of another size.
    """
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ConfigurationError(
            f"{network} needs height and width that are multiples of {multiple}, got {height}×{width}; "
            f"pad to {-(-height // multiple) * multiple}×{-(-width // multiple) * multiple}"
        )


def attach_resnet_encoder(network: nn.Module, resnet: nn.Module, in_channels: int) -> None:
    """Give ``network`` a torchvision ResNet's stem and stages under the authors' names (``firstconv``,
    ``firstbn``, ``firstrelu``, ``firstmaxpool``, ``encoder1..4``), so their state dicts load unchanged.

    The published networks take 3 bands; other band counts (RGBN...) get a stem of their own width.
    """
    network.firstconv = (
        resnet.conv1
        if in_channels == 3
        else nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    )
    network.firstbn = resnet.bn1
    network.firstrelu = resnet.relu
    network.firstmaxpool = resnet.maxpool
    network.encoder1 = resnet.layer1
    network.encoder2 = resnet.layer2
    network.encoder3 = resnet.layer3
    network.encoder4 = resnet.layer4
