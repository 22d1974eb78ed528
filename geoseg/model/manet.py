"""MANet (Li et al., "Multi-Attention-Network for Semantic Segmentation of Fine-Resolution Remote Sensing
Images", IEEE TGRS 2021), faithful to the published network and its checkpoints.

Reads top-down: attention layers, decoder block, the model, builders. Module names follow the authors'
original repository (``firstconv``, ``encoder1..4``, ``attention1..4.PAM/CAM``, ``decoder1..4``,
``finaldeconv1``...) so their state dicts load without renaming. The encoder is a torchvision ResNet built
without weights: nothing is ever downloaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tv_models

from geoseg.errors import ConfigurationError
from geoseg.model.layers import (
    attach_resnet_encoder,
    check_network_arguments,
    encode_resnet,
    float32_region,
)

# backbone name -> (torchvision builder name, encoder stage channels e1..e4)
ENCODERS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


class KernelAttention(nn.Module):
    """Kernel attention with a softplus feature map ("PAM" in the authors' code): cost linear in H·W.

    out[:, n] = (KVᵀ Q[:, n]) / Σ_m Q[m, n] (Σ_n' K[m, n'] + eps), with KV = K Vᵀ summed over positions,
    returned as x + gamma · out.
    """

    def __init__(self, channels: int, scale: int = 8, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.query_conv = nn.Conv2d(channels, channels // scale, kernel_size=1)
        self.key_conv = nn.Conv2d(channels, channels // scale, kernel_size=1)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x, no_autocast = float32_region(x)
        with no_autocast:
            q = F.softplus(self.query_conv(x)).flatten(2)  # B, m, N
            k = F.softplus(self.key_conv(x)).flatten(2)  # B, m, N
            v = self.value_conv(x).flatten(2)  # B, C, N
            kv = torch.einsum("bmn,bcn->bmc", k, v)  # B, m, C
            norm = 1.0 / torch.einsum("bmn,bm->bn", q, k.sum(dim=-1) + self.eps)  # B, N
            out = torch.einsum("bmn,bmc->bcn", q, kv) * norm.unsqueeze(1)  # B, C, N
            return x + self.gamma * out.view(batch, channels, height, width)


class ChannelAttention(nn.Module):
    """Channel attention as in DANet ("CAM"): softmax over (rowmax(XXᵀ) − XXᵀ), no convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x, no_autocast = float32_region(x)
        with no_autocast:
            flat = x.flatten(2)  # B, C, N
            energy = torch.bmm(flat, flat.transpose(1, 2))  # B, C, C
            energy = energy.amax(dim=-1, keepdim=True) - energy
            attention = torch.softmax(energy, dim=-1)
            out = torch.bmm(attention, flat).view(batch, channels, height, width)
            return self.gamma * out + x


class AttentionBlock(nn.Module):
    """PAM(x) + CAM(x): both keep their own identity, so x is counted twice, as published."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.PAM = KernelAttention(channels)
        self.CAM = ChannelAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.PAM(x) + self.CAM(x)


class DecoderBlock(nn.Module):
    """LinkNet-style upsampling block: 1×1 reduce, 3×3 transposed conv (×2), 1×1 expand."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = in_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU(inplace=True)
        self.deconv2 = nn.ConvTranspose2d(mid, mid, kernel_size=3, stride=2, padding=1, output_padding=1)
        self.norm2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid, out_channels, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(out_channels)
        self.relu3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        x = self.relu2(self.norm2(self.deconv2(x)))
        return self.relu3(self.norm3(self.conv3(x)))


class MANet(nn.Module):
    """ResNet encoder, kernel + channel attention on every stage, LinkNet decoder, full-resolution logits."""

    def __init__(self, num_classes: int, backbone: str = "resnet50", in_channels: int = 3) -> None:
        super().__init__()
        if backbone not in ENCODERS:
            raise ConfigurationError(f"unknown backbone {backbone!r}; choose one of {', '.join(ENCODERS)}")
        check_network_arguments(num_classes, in_channels)
        self.backbone_name = backbone
        self.num_classes = num_classes
        c1, c2, c3, c4 = ENCODERS[backbone]
        resnet = getattr(tv_models, backbone)(weights=None)
        attach_resnet_encoder(self, resnet, in_channels)

        self.attention4 = AttentionBlock(c4)
        self.attention3 = AttentionBlock(c3)
        self.attention2 = AttentionBlock(c2)
        self.attention1 = AttentionBlock(c1)

        self.decoder4 = DecoderBlock(c4, c3)
        self.decoder3 = DecoderBlock(c3, c2)
        self.decoder2 = DecoderBlock(c2, c1)
        self.decoder1 = DecoderBlock(c1, c1)

        self.finaldeconv1 = nn.ConvTranspose2d(c1, 32, kernel_size=4, stride=2, padding=1)
        self.finalrelu1 = nn.ReLU(inplace=True)
        self.finalconv2 = nn.Conv2d(32, 32, kernel_size=3, padding=1)
        self.finalrelu2 = nn.ReLU(inplace=True)
        self.finalconv3 = nn.Conv2d(32, num_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 32 or width % 32:
            raise ConfigurationError(
                f"MANet needs height and width that are multiples of 32, got {height}×{width}; "
                f"pad to {-(-height // 32) * 32}×{-(-width // 32) * 32}"
            )
        e1, e2, e3, e4 = encode_resnet(self, x)  # stem and stages 1-2 in float32 under autocast
        e4 = self.attention4(e4)

        d4 = self.decoder4(e4) + self.attention3(e3)
        d3 = self.decoder3(d4) + self.attention2(e2)
        d2 = self.decoder2(d3) + self.attention1(e1)
        d1 = self.decoder1(d2)

        out = self.finalrelu1(self.finaldeconv1(d1))
        out = self.finalrelu2(self.finalconv2(out))
        return self.finalconv3(out)


def build_manet(num_classes: int, backbone: str = "resnet50", *, in_channels: int = 3) -> MANet:
    """A randomly initialised MANet (attention gammas start at zero, as published)."""
    return MANet(num_classes=num_classes, backbone=backbone, in_channels=in_channels)
