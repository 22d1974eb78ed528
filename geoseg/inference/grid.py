"""One global tile grid over a scene, and the chunks that compute and finish it piece by piece.

Tiles of size T start every S = T - overlap pixels; the last tile of each row and column is pulled back
inside the scene, so no tile is ragged or padded with zeros (a scene smaller than a tile is one tile,
reflect-padded by the reader). The output is cut into block-aligned chunks processed in row-major order. Each
tile belongs to the chunk holding its top-left corner and is computed exactly once; its contributions
beyond that chunk are carried to the chunk on the right (in memory) or the chunk row below (the frontier).
A chunk's pixels are final once the chunk is done, because no later tile starts above or left of it.

The grid is laid over the *virtual scene*: the scene extended by a ``margin`` on each side, whose pixels the
reader mirrors from the scene's own edges (:func:`geoseg.raster.reading.read_mirrored`). Pixels at the
scene's border then sit inside a tile, with context on every side, instead of on a tile's edge where the
network sees least. Tiles start at ``-margin``; every tile still covers real pixels (the margin is smaller
than a tile) and only real pixels are ever finished and written; the margin's pixels are summed and dropped.

A grid may also cover one :class:`Region` of the scene: the same global tile starts, restricted to the tiles
that touch the region (some start above or left of it), chunked from the region's corner; its pixels are
blended from exactly the tiles, with exactly the weights, that the whole-scene grid gives them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from geoseg.errors import ConfigurationError

DEFAULT_CHUNK = 1024
CHUNK_MULTIPLE = 512  # the output's block size: chunks write whole blocks, never a block twice


def check_tiling(tile: int, overlap: int) -> None:
    """A positive tile and an overlap that leaves a positive stride (the network's input multiple:
    :meth:`~geoseg.model.architectures.Architecture.check_tile`)."""
    if tile <= 0:
        raise ConfigurationError(f"tile={tile}: give a positive tile size")
    if not 0 <= overlap < tile:
        raise ConfigurationError(f"overlap={overlap}: give 0 or more, less than the tile ({tile} px)")


def check_margin(margin: int, tile: int) -> None:
    """A border margin every tile of which still covers real pixels."""
    if not 0 <= margin < tile:
        raise ConfigurationError(
            f"border margin {margin} must be at least 0 and smaller than the tile size {tile}"
        )


def axis_margin(size: int, tile: int, margin: int) -> int:
    """The border margin along an axis of ``size`` px: ``margin``, except that an axis that fits in one tile
    keeps one tile (it is mirrored by as much as fits): a chip of the tile's size costs one tile, not four."""
    return margin if size > tile else min(margin, (tile - size) // 2)


def tile_starts(size: int, tile: int, stride: int, margin: int = 0) -> list[int]:
    """Start offsets along one axis of ``size`` px extended by ``margin`` px on both sides: every ``stride``
    px from ``-margin``, the last one pulled back to end at ``size + margin``."""
    extent = size + 2 * margin
    if extent <= tile:
        return [-margin]
    return [*range(-margin, extent - tile - margin, stride), extent - tile - margin]


@dataclass(frozen=True)
class Region:
    """A block-aligned rectangle ``y0:y1, x0:x1`` of output pixels, computed on its own (a unit of work)."""

    index: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


@dataclass(frozen=True)
class Tile:
    """One network input: its extent inside the virtual scene (smaller than the tile size only for tiny
    scenes); it may begin before the scene's first pixel or end after its last, in the margin."""

    y: int
    x: int
    height: int
    width: int
    chunk: int


@dataclass(frozen=True)
class Chunk:
    """A block-aligned piece of the output and the tiles it computes.

    ``y0:y1, x0:x1`` are the output pixels finished by this chunk; the accumulator spans ``acc_y0:ext_y1,
    acc_x0:ext_x1`` (the same for every chunk of a row or column), because the chunk's tiles reach further
    (and, in the first row or column of a region, start before it).
    """

    index: int
    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int
    ext_y1: int
    ext_x1: int
    tiles: tuple[Tile, ...]
    acc_y0: int
    acc_x0: int

    @property
    def read_window(self) -> tuple[int, int, int, int]:
        """(row_off, col_off, height, width) of the virtual scene covering all of this chunk's tiles."""
        top = min(t.y for t in self.tiles)
        left = min(t.x for t in self.tiles)
        bottom = max(t.y + t.height for t in self.tiles)
        right = max(t.x + t.width for t in self.tiles)
        return top, left, bottom - top, right - left


def _axis_chunks(starts: list[int], tile_extent: int, begin: int, end: int, chunk: int):
    """Per chunk of ``begin:end`` along one axis: (begin, end, accumulator begin, accumulator end, first tile
    index, tile index stop). The first chunk also owns the tiles that start before ``begin``; an accumulator
    also holds what the previous one hands on (at the scene's end, tiles reach into the margin beyond a last
    chunk that has no tiles of its own)."""
    n = max(1, -(-(end - begin) // chunk))
    out = []
    handed = begin
    for i in range(n):
        lo, hi = begin + i * chunk, min(end, begin + (i + 1) * chunk)
        first = 0 if i == 0 else bisect.bisect_left(starts, lo)
        stop = bisect.bisect_left(starts, hi)
        reach = max((starts[t] + tile_extent for t in range(first, stop)), default=hi)
        origin = min(lo, starts[first]) if first < stop else lo
        handed = max(hi, reach, handed)
        out.append((lo, hi, origin, handed, first, stop))
    return out


class TileGrid:
    """The tiles and chunks of one scene, or of one ``region`` of it; chunks are generated lazily, so huge
    scenes cost nothing here. ``margin``: the border margin of the virtual scene (0: tiles end at the
    scene's border)."""

    def __init__(
        self,
        height: int,
        width: int,
        tile: int,
        overlap: int,
        chunk_size: int = DEFAULT_CHUNK,
        region: Region | None = None,
        margin: int = 0,
    ):
        check_tiling(tile, overlap)  # the network's input multiple is checked by the plan, which knows it
        check_margin(margin, tile)
        if height <= 0 or width <= 0:
            raise ConfigurationError(f"scene size {width}x{height} is empty")
        self.height, self.width = height, width
        self.tile, self.overlap, self.margin = tile, overlap, margin
        self.stride = tile - overlap
        self.chunk_size = -(-max(chunk_size, tile) // CHUNK_MULTIPLE) * CHUNK_MULTIPLE
        self.margin_y, self.margin_x = axis_margin(height, tile, margin), axis_margin(width, tile, margin)
        self.tile_height = min(tile, height + 2 * self.margin_y)
        self.tile_width = min(tile, width + 2 * self.margin_x)
        self.region = Region(0, 0, height, 0, width) if region is None else region
        y0, y1, x0, x1 = self.region.y0, self.region.y1, self.region.x0, self.region.x1
        th, tw = self.tile_height, self.tile_width
        ys, xs = (
            tile_starts(height, tile, self.stride, self.margin_y),
            tile_starts(width, tile, self.stride, self.margin_x),
        )
        self.ys = [y for y in ys if y < y1 and y + th > y0]
        self.xs = [x for x in xs if x < x1 and x + tw > x0]
        self._rows = _axis_chunks(self.ys, th, y0, y1, self.chunk_size)
        self._cols = _axis_chunks(self.xs, tw, x0, x1, self.chunk_size)

    def for_region(self, region: Region) -> TileGrid:
        """The grid of ``region``: the tiles of this (whole-scene) grid that touch it."""
        return TileGrid(
            self.height, self.width, self.tile, self.overlap, self.chunk_size, region, self.margin
        )

    @property
    def num_tiles(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def chunk_rows(self) -> int:
        return len(self._rows)

    @property
    def chunk_cols(self) -> int:
        return len(self._cols)

    @property
    def num_chunks(self) -> int:
        return self.chunk_rows * self.chunk_cols

    def chunk(self, row: int, col: int) -> Chunk:
        y0, y1, ay0, ey1, r0, r1 = self._rows[row]
        x0, x1, ax0, ex1, c0, c1 = self._cols[col]
        index = row * self.chunk_cols + col
        tiles = tuple(
            Tile(self.ys[r], self.xs[c], self.tile_height, self.tile_width, index)
            for r in range(r0, r1)
            for c in range(c0, c1)
        )
        return Chunk(index, row, col, y0, y1, x0, x1, ey1, ex1, tiles, ay0, ax0)

    def chunks(self) -> Iterator[Chunk]:
        """All chunks in processing (row-major) order."""
        for row in range(self.chunk_rows):
            for col in range(self.chunk_cols):
                yield self.chunk(row, col)
