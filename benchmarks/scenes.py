"""Synthetic scenes for the benchmarks, written block by block so the generator's memory stays bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def write_blocky_scene(path: Path, size: int, *, pixel_size: float, cell: int, seed: int = 0) -> None:
    """A random RGB uint8 scene of ``cell``-pixel squares (texture for the network, compressible on disk)."""
    rng = np.random.default_rng(seed)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="DEFLATE",
        crs="EPSG:32633",
        transform=Affine(pixel_size, 0, 5e5, 0, -pixel_size, 6e6),
        BIGTIFF="IF_SAFER",
    )
    with rasterio.open(path, "w", **profile) as dst:
        for _, window in dst.block_windows(1):
            shape = (3, window.height // cell + 2, window.width // cell + 2)
            coarse = rng.integers(0, 256, shape).astype(np.uint8)
            block = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, : window.height, : window.width]
            dst.write(block, window=window)
