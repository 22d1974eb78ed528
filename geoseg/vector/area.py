"""True areas in square metres for polygons in a raster's pixel grid, in any CRS, with pyproj.

A planar area times the CRS unit squared is wrong wherever the projection is not equal-area (2.6 times too
large in Web Mercator at 52 degrees north). Here every CRS with a datum (projected, geographic, custom WKT)
is mapped by pyproj onto a Lambert azimuthal equal-area projection of *its own* ellipsoid, centred on the
raster; areas there are areas on the ellipsoid.

Transforming every vertex would cost more than polygonizing, so a polygon that spans at most
``LOCAL_EXTENT_M`` uses its planar pixel area times the local area of one pixel at its centroid (the
Jacobian of pixel -> equal-area, by central differences). That is exact where the Jacobian varies linearly
across the polygon; the remainder is of order (extent / earth radius)^2, under 1e-7 relative at 1 km.
Larger polygons are transformed vertex by vertex, in bulk, with their edges cut to at most ``SEGMENT_M``
(so straight pixel edges follow the projection).

A CRS without a datum (a local engineering grid) keeps planar areas times its unit squared; a raster without
a CRS gives areas in square raster units.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from affine import Affine

LOCAL_EXTENT_M = 1000.0
SEGMENT_M = 100.0


class GroundArea:
    """Areas in square metres of pixel-space polygons of one raster (its CRS and affine transform)."""

    def __init__(self, crs, transform: Affine, width: int, height: int) -> None:
        self.transform = transform
        self.width, self.height = width, height
        self.to_equal_area = None
        self.unit_area = abs(transform.determinant)  # square metres (or raster units) per pixel, if planar
        if crs is not None:
            self.to_equal_area = _equal_area_transformer(crs, transform * (width / 2, height / 2))
            if self.to_equal_area is None:  # no datum: planar, in the CRS's unit (LOCAL_CS has one too)
                unit = crs.units_factor[1]
                self.unit_area *= unit * unit
        self.pixel_size_m = math.sqrt(self.pixel_areas(np.array([[width / 2, height / 2]]))[0])

    def pixel_areas(self, points: np.ndarray) -> np.ndarray:
        """The ground area (m²) of one pixel at each pixel-space point (n x 2: column, row)."""
        if self.to_equal_area is None:
            return np.full(len(points), self.unit_area)
        step = 0.5
        x, y = points[:, 0], points[:, 1]
        offsets = ((step, 0.0), (-step, 0.0), (0.0, step), (0.0, -step))
        px = np.concatenate([x + dx for dx, _ in offsets])
        py = np.concatenate([y + dy for _, dy in offsets])
        ex, ey = self._to_equal_area(px, py)
        n = len(points)
        (x1, x0, x3, x2), (y1, y0, y3, y2) = ex.reshape(4, n), ey.reshape(4, n)
        d = 2 * step
        return np.abs((x1 - x0) * (y3 - y2) - (x3 - x2) * (y1 - y0)) / (d * d)

    def min_pixel_area(self, row0: int, col0: int, row1: int, col1: int) -> float:
        """The smallest ground area of a pixel in a window (corners and centre): with it, a region of
        ``ceil(min_area / smallest)`` pixels anywhere in the window covers at least ``min_area``."""
        corners = np.array(
            [[col0, row0], [col1, row0], [col0, row1], [col1, row1], [(col0 + col1) / 2, (row0 + row1) / 2]],
            dtype=np.float64,
        )
        return float(self.pixel_areas(corners).min())

    def areas(self, pixel_polygons: np.ndarray) -> np.ndarray:
        """Ground areas (m²) of polygons given in pixel coordinates of the raster."""
        planar = shapely.area(pixel_polygons)
        if self.to_equal_area is None or not len(pixel_polygons):
            return planar * self.unit_area
        bounds = shapely.bounds(pixel_polygons)
        extent_px = np.hypot(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
        large = extent_px * self.pixel_size_m > LOCAL_EXTENT_M
        out = np.empty(len(pixel_polygons))
        small = ~large
        if small.any():
            centroids = shapely.get_coordinates(shapely.centroid(pixel_polygons[small]))
            out[small] = planar[small] * self.pixel_areas(centroids)
        if large.any():
            out[large] = self._transformed_areas(pixel_polygons[large])
        return out

    def _transformed_areas(self, pixel_polygons: np.ndarray) -> np.ndarray:
        """Areas from every vertex in the equal-area projection, edges cut to at most ``SEGMENT_M`` (the
        shoelace formula per ring, in bulk: shapely.segmentize is slow on polygons with many holes)."""
        parts, polygon_of_part = shapely.get_parts(pixel_polygons, return_index=True)
        rings, part_of_ring = shapely.get_rings(parts, return_index=True)
        xy, ring_of_vertex = shapely.get_coordinates(rings, return_index=True)
        # the segments of every ring (closed rings repeat their first vertex: no wrap-around needed)
        same_ring = ring_of_vertex[1:] == ring_of_vertex[:-1]
        start, end, ring = xy[:-1][same_ring], xy[1:][same_ring], ring_of_vertex[:-1][same_ring]
        pieces = np.ceil(np.hypot(*(end - start).T) * self.pixel_size_m / SEGMENT_M).astype(np.int64)
        pieces = np.maximum(pieces, 1)
        segment = np.repeat(np.arange(len(start)), pieces)
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)
        t = (np.arange(len(segment)) - first) / pieces[segment]
        points = start[segment] + (end[segment] - start[segment]) * t[:, None]  # each ring, once round
        x, y = self._to_equal_area(points[:, 0], points[:, 1])
        ring_of_point = ring[segment]
        following = np.arange(1, len(points) + 1)
        last = np.r_[ring_of_point[1:] != ring_of_point[:-1], True]
        following[last] = np.flatnonzero(np.r_[True, last[:-1]])  # a ring's last point closes on its first
        cross = x * y[following] - x[following] * y
        signed = np.bincount(ring_of_point, weights=cross, minlength=len(rings)) / 2
        exterior = np.r_[True, part_of_ring[1:] != part_of_ring[:-1]]
        ring_area = np.where(exterior, np.abs(signed), -np.abs(signed))
        part_area = np.bincount(part_of_ring, weights=ring_area, minlength=len(parts))
        return np.bincount(polygon_of_part, weights=part_area, minlength=len(pixel_polygons))

    def _to_equal_area(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b, c, d, e, f = self.transform[:6]
        return self.to_equal_area.transform(a * px + b * py + c, d * px + e * py + f)


def _equal_area_transformer(crs, centre: tuple[float, float]):
    """pyproj Transformer from ``crs`` to an equal-area projection of its own ellipsoid centred on
    ``centre`` (CRS coordinates); None for a CRS without a datum."""
    import pyproj
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

    source = pyproj.CRS.from_wkt(crs.to_wkt())
    geodetic = source.geodetic_crs
    if geodetic is None:
        return None
    lon, lat = pyproj.Transformer.from_crs(source, geodetic, always_xy=True).transform(*centre)
    degrees = math.degrees(geodetic.axis_info[0].unit_conversion_factor)  # 0.9 for grads
    target = ProjectedCRS(
        LambertAzimuthalEqualAreaConversion(lat * degrees, lon * degrees), geodetic_crs=geodetic
    )
    return pyproj.Transformer.from_crs(source, target, always_xy=True)
