"""Pieces the network files share (in the timm style: layers apart from models), top-down: checks and the
float32 region, the ResNet encoder, attention, the LinkNet decoder and head.

Names are the authors' (``firstconv``, ``encoder1..4``, ``PAM``/``CAM``'s ``query_conv``...,
``decoder1..4``, ``finaldeconv1``...), so their state dicts load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def encode_resnet(
    network: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The four stage outputs (strides 4, 8, 16, 32) of an encoder set up by :func:`attach_resnet_encoder`.

    Under bf16/fp16 autocast the stem and the first two stages still run in float32: they carry the finest
    detail (the decoder's two finest skips), and rounding them, even just the normalised input, moves class
    boundaries. Measured with the bundled MANet-R50 and a GeoSeg-format conversion of it on 11 real 512²
    crops (sample scene, aerial, ISPRS, LoveDA), share of pixels whose class bf16 changed with one group in
    bf16 at a time: input rounding alone 0.6-0.8 %, stem 1.0-1.2 %, stage 1 0.6-0.7 %, stage 2 0.25 %,
    stage 3 0.08 %, stage 4, decoder, head 0.01-0.05 % each. With the stem and stages 1-2 in float32 (21 %
    of the convolution FLOPs; 34 % with the attention, float32 anyway) bf16 agrees with float32 on 99.87 %
    (every crop >= 99.7 %); with the stem and stage 1 only on 99.7 % (crops down to 99.4 %). A float32
    residual sum in the bf16 stages changed nothing: the bf16 rounding of every convolution's input
    dominates.
    """
    x, no_autocast = float32_region(x)
    with no_autocast:
        stem = network.firstmaxpool(network.firstrelu(network.firstbn(network.firstconv(x))))
        e1 = network.encoder1(stem)
        e2 = network.encoder2(e1)
    e3 = network.encoder3(e2)
    return e1, e2, e3, network.encoder4(e3)


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


def attach_linknet_decoder(network: nn.Module, channels: tuple[int, int, int, int], num_classes: int) -> None:
    """Give ``network`` MANet's decoder (``decoder4..1``) and full-resolution head (``finaldeconv1``,
    ``finalconv2``, ``finalconv3``) for encoder stages of ``channels`` (e1..e4), under the authors' names."""
    c1, c2, c3, c4 = channels
    network.decoder4 = DecoderBlock(c4, c3)
    network.decoder3 = DecoderBlock(c3, c2)
    network.decoder2 = DecoderBlock(c2, c1)
    network.decoder1 = DecoderBlock(c1, c1)

    network.finaldeconv1 = nn.ConvTranspose2d(c1, 32, kernel_size=4, stride=2, padding=1)
    network.finalrelu1 = nn.ReLU(inplace=True)
    network.finalconv2 = nn.Conv2d(32, 32, kernel_size=3, padding=1)
    network.finalrelu2 = nn.ReLU(inplace=True)
    network.finalconv3 = nn.Conv2d(32, num_classes, kernel_size=3, padding=1)


def decode_linknet(
    network: nn.Module, e1: torch.Tensor, e2: torch.Tensor, e3: torch.Tensor, e4: torch.Tensor
) -> torch.Tensor:
    """Logits at the input's resolution from the four stage outputs, each through the network's
    ``attention1..4`` and summed into the decoder set up by :func:`attach_linknet_decoder`."""
    e4 = network.attention4(e4)

    d4 = network.decoder4(e4) + network.attention3(e3)
    d3 = network.decoder3(d4) + network.attention2(e2)
    d2 = network.decoder2(d3) + network.attention1(e1)
    d1 = network.decoder1(d2)

    out = network.finalrelu1(network.finaldeconv1(d1))
    out = network.finalrelu2(network.finalconv2(out))
    return network.finalconv3(out)
