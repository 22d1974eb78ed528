"""Polygonize one window of a class raster with GDAL, into shapely geometries in pixel coordinates."""

from __future__ import annotations

from itertools import chain, islice

import numpy as np
import shapely
from affine import Affine
from rasterio import features

from geoseg.vector.blocks import Window

# value types GDAL polygonizes directly (rasterio.features.shapes)
GDAL_TYPES = (np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.int32))
SHAPES_BATCH = 20_000


def apply_affine(xy: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel coordinates (n x 2) to CRS coordinates, with the same arithmetic everywhere, so the integer
    pixel corners shared by neighbouring cells land on bit-identical coordinates."""
    a, b, c, d, e, f = transform[:6]
    x, y = xy[:, 0], xy[:, 1]
    out = np.empty_like(xy)
    out[:, 0] = x * a + c if b == 0 else x * a + y * b + c
    out[:, 1] = y * e + f if d == 0 else x * d + y * e + f
    return out


def shapes_to_polygons(
    shapes: list[tuple[dict, float]], transform: Affine | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """GeoJSON-like polygons from ``rasterio.features.shapes`` to shapely, all built in one call, their
    coordinates taken through ``transform`` (pixel -> CRS) first if given."""
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
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64).reshape(-1, 2)
    if transform is not None:
        coords = apply_affine(coords, transform)
    ring_offsets = np.concatenate([[0], np.cumsum(ring_ends)])
    poly_offsets = np.concatenate([[0], poly_ends])
    polygons = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, poly_offsets))
    values = np.array([value for _, value in shapes], dtype=np.int64)
    return polygons, values


def polygonize_window(
    classes: np.ndarray,
    valid: np.ndarray | None,
    window: Window,
    connectivity: int,
    transform: Affine | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One valid polygon per connected region of a window, in the raster's pixel coordinates, or in its CRS
    through the raster's ``transform``.

    Returns (polygons, class values). GDAL polygonizes the window whole (as fast as it gets); its shapes
    become shapely geometries a batch at a time, so Python objects never hold the whole window's polygons.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, not {connectivity}")
    values_of = None
    if classes.dtype not in GDAL_TYPES:  # (u)int32/64 ids: polygonize compact codes, map them back
        values_of, codes = np.unique(classes, return_inverse=True)
        classes = codes.reshape(classes.shape).astype(np.int32)
    offset = Affine.translation(window.col0, window.row0)
    shapes = features.shapes(classes, mask=valid, connectivity=connectivity, transform=offset)
    parts, part_values = [], []
    while chunk := list(islice(shapes, SHAPES_BATCH)):
        polygons, values = shapes_to_polygons(chunk, transform)
        parts.append(polygons)
        part_values.append(values)
    if not parts:
        return np.empty(0, object), np.empty(0, np.int64)
    polygons, values = np.concatenate(parts), np.concatenate(part_values)
    if values_of is not None:
        values = values_of[values].astype(np.int64)
    if connectivity == 8:
        # 8-connected regions touching themselves at a corner come back as self-touching rings (invalid);
        # their valid form is a MultiPolygon whose parts meet at that corner.
        invalid = ~shapely.is_valid(polygons)
        if invalid.any():
            polygons[invalid] = shapely.make_valid(
                polygons[invalid], method="structure", keep_collapsed=False
            )
    return polygons, values
