"""Planning a scene before any work: bands, value range, georeferencing, the global tile grid and its regions.

Regions are the unit of work beyond one stream (see :mod:`geoseg.inference.region`). Tiles that straddle a
region border are computed once per region that needs them, so regions are as few and as large as the work
allows: one region when one process computes the scene without ``--resume`` (every tile exactly once), else
full-width bands at least :data:`MIN_REGION_TILES` tiles high (a border then repeats about one tile row in
ten), cut into columns only when there are not enough bands for the workers or for resume.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
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
from geoseg.styles import style_sidecar

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


@dataclass
class OutputPaths:
    """Where one scene's results go; optional outputs are None when not asked for."""

    classes: Path
    confidence: Path | None = None
    probabilities: Path | None = None
    polygons: Path | None = None
    quicklook: Path | None = None  # a PNG drawn from the finished class raster (geoseg.plots)
    styles: bool = True  # QGIS styles for the class and confidence rasters and the polygons (geoseg.styles)

    def rasters(self) -> list[tuple[str, Path]]:
        kinds = (
            ("classes", self.classes),
            ("confidence", self.confidence),
            ("probabilities", self.probabilities),
        )
        return [(kind, path) for kind, path in kinds if path is not None]

    def items(self) -> list[tuple[str, Path]]:
        extras = (("polygons", self.polygons), ("quicklook", self.quicklook))
        return self.rasters() + [(kind, path) for kind, path in extras if path is not None]

    @property
    def class_names(self) -> Path:
        """The class raster's GDAL side-car holding the class names (QGIS reads them only from there)."""
        return self.classes.with_name(self.classes.name + ".aux.xml")

    def results(self) -> list[tuple[str, Path]]:
        """The files whose presence says the scene is finished: :meth:`items` and the class names side-car
        (a Shapefile's side-cars come on top, as GDAL writes them)."""
        first, *others = self.items()
        return [first, ("classes.aux.xml", self.class_names), *others]

    def style_files(self) -> list[tuple[str, Path]]:
        """The ``.qml`` files QGIS applies by itself to the class and confidence rasters and the polygons (a
        GeoPackage holds its style inside); none without :attr:`styles`. Not in :meth:`results`: a scene
        an older geoseg finished without them is still finished."""
        if not self.styles:
            return []
        styled = (("classes", self.classes), ("confidence", self.confidence), ("polygons", self.polygons))
        found = [(f"{kind}.qml", style_sidecar(path)) for kind, path in styled if path is not None]
        return [(kind, path) for kind, path in found if path is not None]

    def files(self) -> list[tuple[str, Path]]:
        """Every file the scene is made of (one unit: all are written, or none)."""
        return self.results() + self.style_files()


@dataclass
class PredictResult:
    """What ``predict`` reports per scene (``--json`` prints :meth:`to_dict`).

    ``tiles`` counts the tiles the network computed in this run: tiles whose input pixels are all invalid
    are skipped, and regions finished by an earlier, interrupted run (``--resume``) are not computed again.
    """

    input: str
    outputs: dict[str, str]
    width: int
    height: int
    tiles: int
    seconds: float
    device: str
    class_fractions: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    precision: str | None = None  # what the network ran in (fp32, bf16, fp16, int8); None when it never ran
    engine: str | None = None  # the runtime that ran it (torch, onnxruntime)
    float32_layers: list[str] | None = None  # int8: the layer groups kept in float32
    status: str | None = None  # "skipped": every output existed already (skip_existing)
    item: str | None = None  # the id of the STAC Item the scene was stacked from

    def to_dict(self) -> dict[str, Any]:
        record = {
            "input": self.input,
            "outputs": self.outputs,
            "width": self.width,
            "height": self.height,
            "tiles": self.tiles,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "precision": self.precision,
            "engine": self.engine,
            "class_fractions": self.class_fractions,
        }
        if self.float32_layers is not None:
            record["float32_layers"] = self.float32_layers
        if self.error is not None:
            record["error"] = self.error
        if self.status is not None:
            record["status"] = self.status
        if self.item is not None:
            record["item"] = self.item
        return record


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
    check_tiling(tile, overlap, ARCHITECTURES[card.architecture].input_multiple)
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
