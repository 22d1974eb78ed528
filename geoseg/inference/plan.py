"""Planning a scene before any work: bands, value range, georeferencing, the global tile grid and its regions.

Regions are the unit of work beyond one stream (see :mod:`geoseg.inference.stream`). Tiles that straddle a
region border are computed once per region that needs them, so regions are as few and as large as the work
allows: one region when one process computes the scene without ``--resume`` (every tile exactly once), else
full-width bands at least :data:`MIN_REGION_TILES` tiles high (a border then repeats about one tile row in
ten), cut into columns only when there are not enough bands for the workers or for resume.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

from geoseg.errors import GeosegWarning
from geoseg.inference.grid import (
    CHUNK_MULTIPLE,
    DEFAULT_CHUNK,
    Region,
    TileGrid,
    axis_margin,
    check_margin,
    check_tiling,
    tile_starts,
)
from geoseg.model.architectures import ARCHITECTURES
from geoseg.model.card import ModelCard
from geoseg.raster.reading import Scale, open_raster, resolve_value_range, select_bands
from geoseg.raster.writing import georeferencing

MIN_REGION_TILES = 10  # a region side of at least 10 tiles: each border repeats ~T/S tile rows of ~10
RESUME_REGION_PIXELS = 2048 * 2048  # with --resume, a region per this many px at least (what a kill loses)
REGIONS_PER_WORKER = 2  # a little slack so that a slow or restarted worker does not hold up the end


@dataclass
class ScenePlan:
    """Everything decided about a scene before any work: bands, value range, georeferencing, grid."""

    path: str
    width: int
    height: int
    bands: list[int]
    value_range: tuple[float, float]
    grid: TileGrid
    georef: dict[str, Any]


def border_margin(tile: int, overlap: int) -> int:
    """The default border margin of the virtual scene (see :mod:`geoseg.inference.grid`): half the overlap,
    so a pixel on the scene's border sits as far inside its tile as the middle of a ramp between neighbours,
    and at least an eighth of the tile when tiles do not overlap. Measured with ``benchmarks/borders.py``."""
    return max(overlap // 2, tile // 8)


def plan_scene(
    card: ModelCard,
    input_path: str | os.PathLike,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    margin: int | None = None,
    bands: list[int] | None = None,
    scale: Scale = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> ScenePlan:
    """Open the scene once to check it against the card and decide bands, scaling and the tile grid.

    ``margin``: the border margin in px that the scene is mirrored by, so its border pixels have context
    (None: :func:`border_margin`; 0: none, border pixels are predicted from tile edges).

    Fails (before any network work) on a missing or unreadable file, bands that do not fit the model or
    16-bit data without a scale; warns about a raster without CRS and about a stride under a quarter of
    the tile (see :func:`_warn_small_stride`).
    """
    tile = card.tile_size if tile is None else int(tile)
    overlap = card.overlap if overlap is None else int(overlap)
    ARCHITECTURES[card.architecture].check_tile(tile)
    check_tiling(tile, overlap)
    margin = border_margin(tile, overlap) if margin is None else int(margin)
    check_margin(margin, tile)
    path = str(input_path)
    with open_raster(path) as dataset:
        indexes = select_bands(dataset, card.bands, bands, path)
        value_range = resolve_value_range(dataset, indexes, scale, card.value_range, path)
        georef = georeferencing(dataset, path)
        grid = TileGrid(dataset.height, dataset.width, tile, overlap, chunk_size, margin=margin)
        _warn_small_stride(grid, card, path)
        return ScenePlan(path, dataset.width, dataset.height, indexes, value_range, grid, georef)


def _warn_small_stride(grid: TileGrid, card: ModelCard, path: str) -> None:
    """Warn when tiles start less than a quarter tile apart: the tile count grows with 1/stride², so e.g.
    ``--tile 32 --overlap 30`` takes minutes on a tiny scene; the warning says what it costs here."""
    if grid.stride * 4 >= grid.tile or (grid.tile, grid.overlap) == (card.tile_size, card.overlap):
        return
    stride = card.tile_size - card.overlap
    margin = border_margin(card.tile_size, card.overlap) if grid.margin else 0  # like for like
    tile = card.tile_size
    default = len(tile_starts(grid.height, tile, stride, axis_margin(grid.height, tile, margin))) * len(
        tile_starts(grid.width, tile, stride, axis_margin(grid.width, tile, margin))
    )
    warnings.warn(
        f"{path}: tile {grid.tile} with overlap {grid.overlap} leaves a stride of {grid.stride} px "
        f"(under a quarter of the tile): {grid.num_tiles} tiles where the model's default (tile "
        f"{card.tile_size}, overlap {card.overlap}) needs {default} ({grid.num_tiles / default:.3g}x); "
        "lower the overlap",
        GeosegWarning,
        stacklevel=3,
    )


def plan_regions(grid: TileGrid, workers: int = 1, resume: bool = False) -> list[Region]:
    """Cut the scene of ``grid`` into block-aligned regions, in row-major order.

    One region for one worker without resume; otherwise about ``REGIONS_PER_WORKER`` per worker and, with
    resume, at least one per ``RESUME_REGION_PIXELS``, never narrower or lower than ``MIN_REGION_TILES``
    tiles (rounded up to whole blocks), bands across the full width first.
    """
    if workers <= 1 and not resume:
        wanted = 1
    else:
        wanted = REGIONS_PER_WORKER * workers if workers > 1 else 1
        if resume:
            wanted = max(wanted, math.ceil(grid.height * grid.width / RESUME_REGION_PIXELS))
    side = -(-MIN_REGION_TILES * grid.tile // CHUNK_MULTIPLE) * CHUNK_MULTIPLE
    max_rows, max_cols = max(1, round(grid.height / side)), max(1, round(grid.width / side))
    rows = min(wanted, max_rows)
    cols = min(-(-wanted // rows), max_cols)
    ys, xs = _block_cuts(grid.height, rows), _block_cuts(grid.width, cols)
    return [
        Region(r * cols + c, ys[r], ys[r + 1], xs[c], xs[c + 1]) for r in range(rows) for c in range(cols)
    ]


def _block_cuts(size: int, parts: int) -> list[int]:
    """``parts + 1`` cut positions over ``0..size`` on block boundaries, the blocks shared out evenly."""
    blocks = -(-size // CHUNK_MULTIPLE)
    parts = max(1, min(parts, blocks))
    cuts = [min(size, (i * blocks // parts) * CHUNK_MULTIPLE) for i in range(parts)]
    return [*cuts, size]
