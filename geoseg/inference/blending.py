"""Window weights for blending overlapping tiles without seams.

A tile's weight tapers only inside the overlap, on sides where a neighbouring tile takes over, and stays
flat at the border of the virtual scene (the scene and its mirrored margin, see
:mod:`geoseg.inference.grid`; tapering there would leave border pixels with nothing but the tile's weakest
predictions). The ramp is sin^2, so the ramps of two neighbours sum to exactly 1 across a regular overlap,
and it never reaches 0, so dividing by the summed weights is always safe.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def axis_weight(extent: int, overlap: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1-D weight of a tile ``extent`` px long, tapering over ``overlap`` px at the interior ends."""
    weight = np.ones(extent, dtype=np.float64)
    n = min(overlap, extent)
    if n == 0:
        return weight.astype(np.float32)
    ramp = np.sin(0.5 * math.pi * (np.arange(n) + 0.5) / overlap) ** 2
    if taper_start:
        weight[:n] = np.minimum(weight[:n], ramp)
    if taper_end:
        weight[extent - n :] = np.minimum(weight[extent - n :], ramp[::-1])
    return weight.astype(np.float32)


class WindowWeights:
    """2-D tile weights on the device, cached by which sides of the tile are interior (at most nine).

    ``height``, ``width``: the scene's; ``margins``: the virtual scene's border margins (rows, columns;
    tiles start at minus them), where the weights stay flat."""

    def __init__(
        self, height: int, width: int, overlap: int, device: torch.device, margins: tuple[int, int] = (0, 0)
    ):
        self.height, self.width, self.overlap, self.device = height, width, overlap, device
        self.margins = margins
        self._cache: dict[tuple, torch.Tensor] = {}

    def __call__(self, y: int, x: int, h: int, w: int) -> torch.Tensor:
        """Weight (h, w) of the tile whose extent is ``y:y+h, x:x+w``."""
        my, mx = self.margins
        top, bottom = y > -my, y + h < self.height + my
        left, right = x > -mx, x + w < self.width + mx
        key = (top, bottom, left, right, h, w)
        weight = self._cache.get(key)
        if weight is None:
            wy = axis_weight(h, self.overlap, top, bottom)
            wx = axis_weight(w, self.overlap, left, right)
            weight = torch.from_numpy(np.outer(wy, wx)).to(self.device)
            self._cache[key] = weight
        return weight
