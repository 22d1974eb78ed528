"""Polygonize block by block and merge the pieces of a region that crosses block edges.

Each block is labelled (one label per connected region of one class) and GDAL polygonizes the label image,
so every piece is known by its label. Pieces touching an internal block edge are tied to the pieces on the
other side that they touch (same class, 4- or 8-neighbours) with a union-find; a group is complete once every
block next to its pieces has been read, and is then unioned into one polygon. Only the groups still open
along the front of processed blocks stay in memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from itertools import chain

import numpy as np
import shapely
from affine import Affine
from rasterio import features

from geoseg.vector.blocks import BlockGrid, BlockReader, Window, label_regions


def shapes_to_polygons(shapes: list[tuple[dict, float]]) -> tuple[np.ndarray, np.ndarray]:
    """GeoJSON-like polygons from ``rasterio.features.shapes`` to shapely, all built in one call."""
    if not shapes:
        return np.empty(0, object), np.empty(0, np.int64)
    ring_ends: list[int] = []
    poly_ends: list[int] = []
    rings: list[list] = []
    for geometry, _ in shapes:
        for ring in geometry["coordinates"]:
            rings.append(ring)
            ring_ends.append(len(ring))
        poly_ends.append(len(rings))
    coords = np.array(list(chain.from_iterable(rings)), dtype=np.float64)
    ring_offsets = np.concatenate([[0], np.cumsum(ring_ends)])
    poly_offsets = np.concatenate([[0], poly_ends])
    polygons = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, poly_offsets))
    values = np.array([value for _, value in shapes], dtype=np.int64)
    return polygons, values


def polygonize_block(labels: np.ndarray, window: Window, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """One valid polygon per label of the block, in pixel coordinates; returns (polygons, labels)."""
    transform = Affine.translation(window.col0, window.row0)
    shapes = list(features.shapes(labels, mask=labels > 0, connectivity=connectivity, transform=transform))
    polygons, values = shapes_to_polygons(shapes)
    if len(values) != len(np.unique(values)):  # defensive: GDAL returned one region in several parts
        order = np.argsort(values, kind="stable")
        values, polygons = values[order], polygons[order]
        uniq, start = np.unique(values, return_index=True)
        polygons = np.array([shapely.union_all(part) for part in np.split(polygons, start[1:])], dtype=object)
        values = uniq
    if connectivity == 8:
        # 8-connected regions touching themselves at a corner come back as self-touching rings (invalid);
        # their valid form is a MultiPolygon whose parts meet at that corner.
        invalid = ~shapely.is_valid(polygons)
        if invalid.any():
            polygons[invalid] = shapely.make_valid(
                polygons[invalid], method="structure", keep_collapsed=False
            )
    return polygons, values


class _Groups:
    """Union-find over pieces that touch internal block edges, with the time each group becomes complete."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}
        self.ready_at: dict[int, int] = {}
        self.geometry: dict[int, object] = {}
        self.value: dict[int, int] = {}
        self.schedule: defaultdict[int, list[int]] = defaultdict(list)

    def add(self, gid: int, geometry, value: int, ready_at: int) -> None:
        self.parent[gid] = gid
        self.members[gid] = [gid]
        self.ready_at[gid] = ready_at
        self.geometry[gid] = geometry
        self.value[gid] = value
        self.schedule[ready_at].append(gid)

    def find(self, gid: int) -> int:
        parent = self.parent
        root = gid
        while parent[root] != root:
            root = parent[root]
        while parent[gid] != root:
            parent[gid], gid = root, parent[gid]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))
        ready = max(self.ready_at[ra], self.ready_at.pop(rb))
        if ready != self.ready_at[ra]:
            self.ready_at[ra] = ready
            self.schedule[ready].append(ra)

    def complete(self, time: int) -> tuple[list, list[int]]:
        """Pop the groups that become complete after block ``time``: (geometries, class values)."""
        geometries, values = [], []
        for gid in self.schedule.pop(time, ()):
            if self.parent.get(gid) != gid or self.ready_at.get(gid) != time:
                continue  # absorbed into another group, or rescheduled later
            members = self.members.pop(gid)
            del self.ready_at[gid]
            parts = [self.geometry.pop(m) for m in members]
            values.append(self.value[gid])
            for m in members:
                del self.parent[m]
                del self.value[m]
            geometries.append(parts[0] if len(parts) == 1 else _merge(parts))
        return geometries, values

    def __len__(self) -> int:
        return len(self.parent)


def _merge(parts: list) -> object:
    # Pixel-aligned pieces share exact edges, so the overlay union is exact; dropping the collinear
    # vertices left where the seams were makes the result independent of the block layout.
    return shapely.simplify(shapely.union_all(parts), 0.0)


def polygonize_raster(
    read: BlockReader,
    grid: BlockGrid,
    connectivity: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (polygons in pixel coordinates, class values) as regions complete, block after block.

    Each connected region of the whole raster comes out exactly once, as one Polygon (4-connectivity) or
    one Polygon/MultiPolygon (8-connectivity, where parts may meet at corners), whatever the block size.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, not {connectivity}")
    offsets = (-1, 0, 1) if connectivity == 8 else (0,)
    width, nrows, ncols = grid.width, grid.rows, grid.cols
    groups = _Groups()
    # global piece ids (0 = none) and classes along the last row of the previous block row,
    # and along the right column of the previous block in this row
    prev_row_id = np.zeros(width, np.int64)
    prev_row_value = np.zeros(width, np.int64)
    next_row_id = np.zeros(width, np.int64)
    next_row_value = np.zeros(width, np.int64)
    left_id = left_value = None
    base = 0
    total = len(grid)
    for time, (r, c, window) in enumerate(grid):
        classes, valid = read(window)
        labels, label_class = label_regions(classes, valid, connectivity)
        polygons, values = polygonize_block(labels, window, connectivity)
        has_top, has_left = r > 0, c > 0
        has_bottom, has_right = r < nrows - 1, c < ncols - 1

        on_edge = np.zeros(len(label_class), bool)
        ready = np.full(len(label_class), time, np.int64)
        if has_top:
            on_edge[labels[0]] = True
        if has_left:
            on_edge[labels[:, 0]] = True
        if has_right:
            on_edge[labels[:, -1]] = True
            ready[labels[:, -1]] = time + 1
        if has_bottom:
            on_edge[labels[-1]] = True
            ready[labels[-1]] = time + ncols
            if connectivity == 8 and has_right:
                corner = labels[-1, -1]
                ready[corner] = time + ncols + 1
        on_edge[0] = False

        seam = on_edge[values]
        if (~seam).any():
            yield polygons[~seam], label_class[values[~seam]]
        for polygon, label in zip(polygons[seam], values[seam], strict=True):
            groups.add(base + int(label), polygon, int(label_class[label]), int(ready[label]))

        pairs = []
        if has_top:
            row_id = np.where(labels[0] > 0, labels[0].astype(np.int64) + base, 0)
            row_value = label_class[labels[0]]
            for dx in offsets:
                lo, hi = max(0, -dx - window.col0), min(window.width, width - dx - window.col0)
                here_id, here_value = row_id[lo:hi], row_value[lo:hi]
                there = slice(window.col0 + lo + dx, window.col0 + hi + dx)
                keep = (here_id > 0) & (prev_row_id[there] > 0) & (here_value == prev_row_value[there])
                pairs.append(np.stack([here_id[keep], prev_row_id[there][keep]], axis=1))
        if has_left:
            col_id = np.where(labels[:, 0] > 0, labels[:, 0].astype(np.int64) + base, 0)
            col_value = label_class[labels[:, 0]]
            for dy in offsets:
                lo, hi = max(0, -dy), min(window.height, window.height - dy)
                here_id, here_value = col_id[lo:hi], col_value[lo:hi]
                there = slice(lo + dy, hi + dy)
                keep = (here_id > 0) & (left_id[there] > 0) & (here_value == left_value[there])
                pairs.append(np.stack([here_id[keep], left_id[there][keep]], axis=1))
        if pairs:
            for a, b in np.unique(np.concatenate(pairs), axis=0).tolist():
                groups.union(a, b)

        if has_bottom:
            bottom = labels[-1]
            next_row_id[window.col0 : window.col1] = np.where(bottom > 0, bottom.astype(np.int64) + base, 0)
            next_row_value[window.col0 : window.col1] = label_class[bottom]
        if has_right:
            right = labels[:, -1]
            left_id = np.where(right > 0, right.astype(np.int64) + base, 0)
            left_value = label_class[right]
        if c == ncols - 1:
            prev_row_id, next_row_id = next_row_id, prev_row_id
            prev_row_value, next_row_value = next_row_value, prev_row_value

        base += len(label_class)
        done, done_values = groups.complete(time)
        if done:
            yield np.array(done, dtype=object), np.array(done_values, dtype=np.int64)
        if progress is not None:
            progress(time + 1, total)
