"""Turning raw pixel values into network input, identically for training and inference.

Runs on the device, so raw uint8/uint16 tiles travel there (4x less transfer than float32) and are
normalised in place of a host-side copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def normalize(
    batch: torch.Tensor,
    value_range: tuple[float, float],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """``((x - lo) / (hi - lo) - mean) / std`` per band, clipped to the value range, in float32.

    ``batch`` is (B, C, H, W) of any numeric dtype; values outside ``value_range`` are clipped so that a
    stray bright pixel in 16-bit data cannot blow up the activations.
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    x = batch.to(torch.float32)
    x = (x.clamp(lo, hi) - lo) * (1.0 / (hi - lo))
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
