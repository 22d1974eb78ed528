"""MAResU-Net (Li et al., "Multistage Attention ResU-Net for Semantic Segmentation of Fine-Resolution Remote
Sensing Images", IEEE GRSL 2021), faithful to the published ``MAResUNet.py`` so that its state dicts load
without renaming.

Reads top-down: convolution blocks, the linear (Taylor) attention, the attention layer, the model, the
builder. The encoder is a torchvision ResNet-34 built without weights (nothing is downloaded; ``geoseg train
--init`` loads an ImageNet one); MANet's channel attention, decoder and head come unchanged from
:mod:`geoseg.model.layers`. Unlike the published file, non-square inputs work: attention results are
reshaped to (H, W), which is identical on square input.
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
    float32_region,
)

SPEC = ARCHITECTURES["maresunet"]


def _conv_relu(channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=kernel_size, padding=kernel_size // 2),
        nn.ReLU(inplace=True),
    )


def _dropout_conv_relu(channels: int) -> nn.Sequential:
    """Dropout2d(0.1) then 1×1 conv + ReLU: index 0 is the dropout, hence the published ``.1.0.`` keys."""
    return nn.Sequential(nn.Dropout2d(0.1), _conv_relu(channels, 1))


class TaylorAttention(KernelAttention):
    """Linear attention from a first-order Taylor expansion of softmax ("PAM" in the authors' code).

    With q̂, k̂ the L2-normalised (over channels, per position) queries and keys, each output position is
    the mean of V weighted by 1 + cos(q_n, k_j):
    out[:, n] = (Σ_j V_j + Σ_m q̂_n[m] Σ_j k̂_j[m] V_j) / (N + Σ_m q̂_n[m] (Σ_j k̂_j[m] + eps)),
    returned as x + gamma · out. The projections (and so the key names) are MANet's softplus-kernel PAM's;
    only the formula differs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x, no_autocast = float32_region(x)
        with no_autocast:
            q = self.query_conv(x).flatten(2)  # B, m, N
            k = self.key_conv(x).flatten(2)  # B, m, N
            v = self.value_conv(x).flatten(2)  # B, C, N
            q = q / q.norm(dim=1, keepdim=True)  # no epsilon, as published
            k = k / k.norm(dim=1, keepdim=True)
            kv = torch.einsum("bmn,bcn->bmc", k, v)  # B, m, C
            numerator = v.sum(dim=-1, keepdim=True) + torch.einsum("bmn,bmc->bcn", q, kv)  # B, C, N
            denominator = height * width + torch.einsum("bmn,bm->bn", q, k.sum(dim=-1) + self.eps)  # B, N
            out = numerator / denominator.unsqueeze(1)
            return x + self.gamma * out.view(batch, channels, height, width)


class AttentionLayer(nn.Module):
    """3×3 conv, then Taylor position attention and channel attention in parallel, each through a 1×1
    conv, summed and mixed by a last 1×1 conv (the authors' ``PAM_CAM_Layer``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_relu(channels, 3)
        self.PAM = TaylorAttention(channels)
        self.CAM = ChannelAttention()
        self.conv2P = _dropout_conv_relu(channels)
        self.conv2C = _dropout_conv_relu(channels)
        self.conv3 = _dropout_conv_relu(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv3(self.conv2P(self.PAM(x)) + self.conv2C(self.CAM(x)))


class MAResUNet(nn.Module):
    """ResNet-34 encoder, attention layers on every stage, MANet's LinkNet decoder and head."""

    def __init__(self, num_classes: int, backbone: str | None = None, in_channels: int = 3) -> None:
        super().__init__()
        backbone = SPEC.default_backbone if backbone is None else backbone
        if backbone not in SPEC.backbones:
            raise ConfigurationError(f"MAResU-Net has a {SPEC.default_backbone} encoder, not {backbone!r}")
        check_network_arguments(num_classes, in_channels)
        self.num_classes = num_classes
        c1, c2, c3, c4 = RESNET_CHANNELS[backbone]
        resnet = getattr(tv_models, backbone)(weights=None)
        attach_resnet_encoder(self, resnet, in_channels)

        self.attention4 = AttentionLayer(c4)
        self.attention3 = AttentionLayer(c3)
        self.attention2 = AttentionLayer(c2)
        self.attention1 = AttentionLayer(c1)
        attach_linknet_decoder(self, (c1, c2, c3, c4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, SPEC.input_multiple, SPEC.label)
        e1, e2, e3, e4 = encode_resnet(self, x)  # stem and stages 1-2 in float32 under autocast, as MANet
        return decode_linknet(self, e1, e2, e3, e4)


def build_maresunet(num_classes: int, *, backbone: str | None = None, in_channels: int = 3) -> MAResUNet:
    """A randomly initialised MAResU-Net (attention gammas start at zero, as published); its only
    ``backbone`` is resnet34."""
    return MAResUNet(num_classes=num_classes, backbone=backbone, in_channels=in_channels)
