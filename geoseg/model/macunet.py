"""MACU-Net (Li et al., "Multi-scale Skip Connections and Asymmetric Convolution Blocks", IEEE GRSL 2021),
faithful to the published ``MACUNet.py`` so that its state dicts load without renaming.

Reads top-down: the asymmetric convolution block and the stages built of it, the channel-attention gate, the
model, the builder.
Module names are the authors' (``conv1..conv10``, ``skblock1..4``, ``deconv4..deconv1``, ``squre``,
``cross_ver``/``cross_hor``); the encoder stages are ``Sequential`` whose index 0 is a max-pool, so their
blocks sit at ``.1``, ``.2``... as in the published keys. Plain ``torch.nn``: nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

from geoseg.model.architectures import ARCHITECTURES
from geoseg.model.layers import check_input_size, check_network_arguments, float32_region

SPEC = ARCHITECTURES["macunet"]  # input multiple 16: four 2×2 max-pools, exact 2× transposed convolutions
WIDTHS = (16, 32, 64, 128, 256)


class ACB(nn.Module):
    """Asymmetric convolution block: 3×3, 1×3 and 3×1 convolutions of the same input, summed, BN, ReLU.

    The names run against the kernel orientation (``cross_ver`` is 1×3) exactly as published.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.squre = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.cross_ver = nn.Conv2d(in_channels, out_channels, kernel_size=(1, 3), padding=(0, 1))
        self.cross_hor = nn.Conv2d(in_channels, out_channels, kernel_size=(3, 1), padding=(1, 0))
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.squre(x) + self.cross_ver(x) + self.cross_hor(x)))


def _stage(in_channels: int, out_channels: int, blocks: int, pool: bool) -> nn.Sequential:
    """``blocks`` ACBs, the first changing the width, after a 2×2 max-pool when ``pool``."""
    layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if pool else []
    layers.append(ACB(in_channels, out_channels))
    layers.extend(ACB(out_channels, out_channels) for _ in range(blocks - 1))
    return nn.Sequential(*layers)


def _up(in_channels: int) -> nn.ConvTranspose2d:
    """2× up-sampling that halves the channels (the published network never interpolates)."""
    return nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)


class ChannelGate(nn.Module):
    """Channel attention over a multi-scale concatenation (the authors' ``skblockN``, "CAB").

    y = conv(x) (1×1, no bias) is scaled per channel by
    sigmoid(fc12(relu(fc11(avg y))) + fc22(relu(fc21(max y)))). The pooled statistics cover the whole
    input, so the gate is computed in float32 under autocast.
    """

    def __init__(self, in_channels: int, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.fc11 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc12 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)
        self.fc21 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc22 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        maximum, no_autocast = float32_region(y.amax(dim=(2, 3), keepdim=True))
        average = y.mean(dim=(2, 3), keepdim=True, dtype=maximum.dtype)  # no float16 copy of y
        with no_autocast:
            gate = torch.sigmoid(
                self.fc12(torch.relu(self.fc11(average))) + self.fc22(torch.relu(self.fc21(maximum)))
            )
        return y * gate.to(y.dtype)


class MACUNet(nn.Module):
    """U-Net of asymmetric convolution blocks with dense multi-scale skips gated by channel attention."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        check_network_arguments(num_classes, in_channels)
        self.num_classes = num_classes
        c1, c2, c3, c4, c5 = WIDTHS
        # encoder: e1 at H, e2 at H/2 ... e5 at H/16
        self.conv1 = _stage(in_channels, c1, 2, pool=False)
        self.conv2 = _stage(c1, c2, 2, pool=True)
        self.conv3 = _stage(c2, c3, 3, pool=True)
        self.conv4 = _stage(c3, c4, 3, pool=True)
        self.conv5 = _stage(c4, c5, 3, pool=True)
        # side paths bringing shallow features down to deeper levels: conv{from}{to}
        self.conv12 = _stage(c1, c2, 1, pool=True)
        self.conv13 = _stage(c2, c3, 1, pool=True)
        self.conv14 = _stage(c3, c4, 1, pool=True)
        self.conv23 = _stage(c2, c3, 1, pool=True)
        self.conv24 = _stage(c3, c4, 1, pool=True)
        self.conv34 = _stage(c3, c4, 1, pool=True)
        # transposed convolutions bringing deep features up to shallower levels
        self.deconv4, self.deconv43, self.deconv42, self.deconv41 = _up(c5), _up(c4), _up(c3), _up(c2)
        self.deconv3, self.deconv32, self.deconv31 = _up(c4), _up(c3), _up(c2)
        self.deconv2, self.deconv21 = _up(c3), _up(c2)
        self.deconv1 = _up(c2)
        # decoder: each level gates the concatenation of five inputs of its width
        self.skblock4 = ChannelGate(5 * c4, c5)
        self.skblock3 = ChannelGate(5 * c3, c4)
        self.skblock2 = ChannelGate(5 * c2, c3)
        self.skblock1 = ChannelGate(5 * c1, c2)
        self.conv6 = _stage(c5, c4, 2, pool=False)
        self.conv7 = _stage(c4, c3, 2, pool=False)
        self.conv8 = _stage(c3, c2, 2, pool=False)
        self.conv9 = _stage(c2, c1, 2, pool=False)
        self.conv10 = nn.Conv2d(c1, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, SPEC.input_multiple, SPEC.label)
        # The input and the first, full-resolution stage stay float32 under autocast, as MANet's stem (see
        # layers.encode_resnet: rounding the normalised input alone changes classes): 4 % of the FLOPs.
        x, no_autocast = float32_region(x)
        with no_autocast:
            e1 = self.conv1(x)
        e2 = self.conv2(e1)
        e3 = self.conv3(e2)
        e4 = self.conv4(e3)
        e5 = self.conv5(e4)
        s12 = self.conv12(e1)
        s13 = self.conv13(s12)
        s14 = self.conv14(s13)
        s23 = self.conv23(e2)
        s24 = self.conv24(s23)
        s34 = self.conv34(e3)

        u4 = self.deconv4(e5)
        u43 = self.deconv43(u4)
        u42 = self.deconv42(u43)
        d4 = self.conv6(self.skblock4(torch.cat([u4, e4, s34, s24, s14], dim=1)))
        u3 = self.deconv3(d4)
        u32 = self.deconv32(u3)
        d3 = self.conv7(self.skblock3(torch.cat([u3, u43, e3, s23, s13], dim=1)))
        u2 = self.deconv2(d3)
        d2 = self.conv8(self.skblock2(torch.cat([u2, u42, u32, e2, s12], dim=1)))
        u1 = self.deconv1(d2)
        skips1 = [u1, self.deconv41(u42), self.deconv31(u32), self.deconv21(u2), e1]
        d1 = self.conv9(self.skblock1(torch.cat(skips1, dim=1)))
        return self.conv10(d1)


def build_macunet(num_classes: int, *, in_channels: int = 3) -> MACUNet:
    """A randomly initialised MACU-Net (any band count)."""
    return MACUNet(num_classes=num_classes, in_channels=in_channels)
