"""Compute and memory of one kernel-attention layer against dot-product attention on the same input.

For square inputs of 64, 128 and 256 pixels a side (C = 64 channels, as a first-stage attention layer of
MANet-R18 sees), it counts multiply-accumulates with torch's FLOP counter (on the ``meta`` device, so even the
256² dot-product case is counted without allocating its 17 GB attention matrix) and measures the peak memory
of tensors the layer allocates by tracking every storage created during the forward pass on the CPU. The
dot-product case at 256² is not executed (it needs about 17 GB); its memory is the N×N matrix, computed.

    python benchmarks/attention_complexity.py [--channels 64] [--sizes 64,128,256]
"""

from __future__ import annotations

import argparse
import weakref
from collections import defaultdict

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from geoseg.model.layers import KernelAttention

PUBLISHED = {  # the MANet repository's figure: (MACs kernel, MACs dot, memory kernel, memory dot)
    64: ("37 M", "3 G", "3 MB", "69 MB"),
    128: ("146 M", "52 G", "13 MB", "1 GB"),
    256: ("585 M", "829 G", "51 MB", "17 GB"),
}


class DotProductAttention(nn.Module):
    """The quadratic baseline (DANet's position attention): softmax(QᵀK) over all N×N position pairs."""

    def __init__(self, channels: int, scale: int = 8) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // scale, 1)
        self.key_conv = nn.Conv2d(channels, channels // scale, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query_conv(x).flatten(2).transpose(1, 2)  # B, N, m
        k = self.key_conv(x).flatten(2)  # B, m, N
        attention = torch.softmax(torch.bmm(q, k), dim=-1)  # B, N, N
        out = torch.bmm(self.value_conv(x).flatten(2), attention.transpose(1, 2))
        return x + self.gamma * out.view(b, c, h, w)


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the context (inputs and weights excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, int] = defaultdict(int)
        self._sizes: dict[int, int] = {}
        self._seen: weakref.WeakSet = weakref.WeakSet()

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.live -= self._sizes.pop(key)
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else (out,):
            if not isinstance(tensor, torch.Tensor) or tensor in self._seen:
                continue
            self._seen.add(tensor)
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key not in self._sizes:
                self._sizes[key] = storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self._refs[key] += 1
            weakref.finalize(tensor, self._release, key)
        return out


def count_macs(layer: nn.Module, channels: int, size: int) -> int:
    meta_layer = layer.to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_layer(torch.empty(1, channels, size, size, device="meta"))
    return counter.get_total_flops() // 2


def peak_memory(layer: nn.Module, channels: int, size: int) -> int:
    x = torch.randn(1, channels, size, size)
    tracker = PeakTensorMemory()
    with torch.no_grad(), tracker:
        layer(x)
    return tracker.peak


def human(value: float, unit: str) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument(
        "--max-dot-bytes", type=float, default=4e9, help="Skip running larger dot-product cases."
    )
    args = parser.parse_args()
    channels = args.channels
    header = (
        f"{'size':>5} | {'MACs kernel':>11} {'MACs dot':>10} {'ratio':>7} | "
        f"{'mem kernel':>10} {'mem dot':>12} {'ratio':>7} | published (MACs k/d, mem k/d)"
    )
    print(f"One attention layer, C = {channels}, batch 1, float32, CPU")
    print(header)
    print("-" * len(header))
    for size in [int(s) for s in args.sizes.split(",")]:
        n = size * size
        macs_kernel = count_macs(KernelAttention(channels), channels, size)
        macs_dot = count_macs(DotProductAttention(channels), channels, size)
        mem_kernel = peak_memory(KernelAttention(channels).eval(), channels, size)
        if 4.0 * n * n <= args.max_dot_bytes:
            mem_dot = peak_memory(DotProductAttention(channels).eval(), channels, size)
            dot_text = human(mem_dot, "B")
        else:
            mem_dot = 4.0 * n * n
            dot_text = human(mem_dot, "B") + "*"
        published = " / ".join(PUBLISHED.get(size, ("-",) * 4))
        print(
            f"{size:>5} | {human(macs_kernel, 'MAC'):>11} {human(macs_dot, 'MAC'):>10} "
            f"{macs_dot / macs_kernel:>6.0f}x | "
            f"{human(mem_kernel, 'B'):>10} {dot_text:>12} {mem_dot / mem_kernel:>6.0f}x | {published}"
        )
    print("* not executed: the N×N attention matrix alone (N² float32), which exceeds --max-dot-bytes")


if __name__ == "__main__":
    main()
