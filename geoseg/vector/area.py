"""True areas in square metres for polygons in a raster's CRS, in any CRS, with pyproj.

A planar area times the CRS unit squared is wrong wherever the projection is not equal-area (2.6 times too
large in Web Mercator at 52 degrees north). Here every CRS with a datum (projected, geographic, custom WKT)
is mapped by pyproj onto a Lambert azimuthal equal-area projection of *its own* ellipsoid, centred on the
raster; areas there are areas on the ellipsoid.

Transforming every vertex would cost more than polygonizing, so a polygon that spans at most
``LOCAL_EXTENT_M`` integrates the local area scale J (the Jacobian of CRS -> equal-area) over itself with J
taken as quadratic about its centroid: area = J(c) A + (J_xx M_xx + 2 J_xy M_xy + J_yy M_yy) / 2, with the
polygon's planar area A and central second moments M, from its vertices in bulk (numpy). The remainder is
of order (extent / earth radius)^3: under 1e-7 relative at 20 km. Up to ``FIRST_ORDER_M`` the second-order
term is itself under 1e-7, and J(c) A (shapely's centroid) is all it takes. J is computed by pyproj on a
grid of nodes at most ``GRID_M`` apart and interpolated bilinearly (its relative curvature is about 1/R²,
so this adds under 1e-9). Larger polygons are transformed vertex by vertex, in bulk, with their edges cut
to at most ``SEGMENT_M`` (so straight pixel edges follow the projection).

A CRS without a datum (a local engineering grid) keeps planar areas times its unit squared; a raster without
a CRS gives areas in square raster units.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from affine import Affine

FIRST_ORDER_M = 1000.0
LOCAL_EXTENT_M = 20_000.0
SEGMENT_M = 100.0
GRID_M = 500.0


class GroundArea:
    """Areas in square metres of polygons in the CRS coordinates of one raster."""

    def __init__(self, crs, transform: Affine, width: int, height: int, name: str = "the raster") -> None:
        self.transform = transform
        self.crs = crs
        self.pixel_crs_area = abs(transform.determinant)  # CRS units² per pixel
        self.to_equal_area = None
        self.unit_area = 1.0  # square metres per CRS unit², for planar areas
        if crs is not None:
            self.to_equal_area = _equal_area_transformer(crs, transform @ (width / 2, height / 2), name)
            if self.to_equal_area is None:  # no datum: planar, in the CRS's unit (LOCAL_CS has one too)
                self.unit_area = crs.units_factor[1] ** 2
        centre = np.array([transform @ (width / 2, height / 2)])
        self.pixel_size_m = math.sqrt(self._scales(centre)[0] * self.pixel_crs_area)
        # ground metres per CRS unit, near the raster (for extents and segment lengths)
        self.metres_per_unit = self.pixel_size_m / math.sqrt(self.pixel_crs_area)

    def min_pixel_area(self, row0: int, col0: int, row1: int, col1: int) -> float:
        """The smallest ground area of a pixel in a window (corners and centre): with it, a region of
        ``ceil(min_area / smallest)`` pixels anywhere in the window covers at least ``min_area``."""
        pixels = [
            (col0, row0),
            (col1, row0),
            (col0, row1),
            (col1, row1),
            ((col0 + col1) / 2, (row0 + row1) / 2),
        ]
        points = np.array([self.transform @ p for p in pixels])
        return float(self._scales(points).min()) * self.pixel_crs_area

    def pixel_areas(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        """Ground areas (m²) of the pixels of a window (height, width): the area scale at each pixel's
        centre (interpolated as :meth:`_interpolated_scales` does) times the pixel's area in the CRS."""
        rows, cols = np.mgrid[row0 : row0 + height, col0 : col0 + width]
        a, b, c, d, e, f = self.transform[:6]
        x, y = a * (cols + 0.5) + b * (rows + 0.5) + c, d * (cols + 0.5) + e * (rows + 0.5) + f
        scales = self._interpolated_scales(np.column_stack([x.ravel(), y.ravel()]))
        return (scales * self.pixel_crs_area).reshape(height, width)

    def areas(self, polygons: np.ndarray) -> np.ndarray:
        """Ground areas (m²) of polygons in the raster's CRS coordinates."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # the antipode: see below
            out = self._projected_areas(polygons)
        unmapped = ~np.isfinite(out)
        if unmapped.any():  # a vertex at the antipode of the projection's centre (a raster round the globe)
            out[unmapped] = self._geodesic_areas(polygons[unmapped])
        return out

    def _projected_areas(self, polygons: np.ndarray) -> np.ndarray:
        planar = shapely.area(polygons)
        if self.to_equal_area is None or not len(polygons):
            return planar * self.unit_area
        bounds = shapely.bounds(polygons)
        extent = np.hypot(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) * self.metres_per_unit
        large = extent > LOCAL_EXTENT_M
        out = np.empty(len(polygons))
        tiny = extent <= FIRST_ORDER_M
        if tiny.any():  # J linear across the polygon: its value at the centroid
            centroids = shapely.get_coordinates(shapely.centroid(polygons[tiny]))
            out[tiny] = planar[tiny] * self._interpolated_scales(centroids)
        middle = ~large & ~tiny
        if middle.any():
            out[middle] = self._moment_areas(polygons[middle], extent[middle] / self.metres_per_unit)
        if large.any():
            out[large] = self._transformed_areas(polygons[large])
        return out

    def _geodesic_areas(self, polygons: np.ndarray) -> np.ndarray:
        """Areas on the CRS's ellipsoid by Green's theorem in the longitude/latitude plane, edges cut to at
        most ``SEGMENT_M`` in the CRS: the area under an edge down to the equator, -integral of G(lat)
        d(lon), with G the authalic primitive; exact for edges along meridians and parallels. For the few
        polygons the equal-area projection cannot take (it has no image of its antipode: a raster round
        the globe); pyproj.Geod is no help there (a ring round all longitudes encloses nothing for it)."""
        import pyproj

        source = pyproj.CRS.from_wkt(self.crs.to_wkt())
        geodetic = source.geodetic_crs
        radians = geodetic.axis_info[0].unit_conversion_factor
        to_lonlat = pyproj.Transformer.from_crs(source, geodetic, always_xy=True)
        geod = geodetic.get_geod()
        a, e2 = geod.a, geod.es
        e = math.sqrt(e2)

        def primitive(lat: np.ndarray) -> np.ndarray:  # integral of a²(1-e²)cos/(1-e²sin²)² from 0 to lat
            sin = np.sin(lat)
            if e == 0:
                return a * a * sin
            return a * a * (1 - e2) / 2 * (sin / (1 - e2 * sin**2) + np.arctanh(e * sin) / e)

        cut = shapely.segmentize(polygons, SEGMENT_M / self.metres_per_unit)
        parts, polygon_of_part = shapely.get_parts(cut, return_index=True)
        rings, part_of_ring = shapely.get_rings(parts, return_index=True)
        xy, ring_of_vertex = shapely.get_coordinates(rings, return_index=True)
        lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
        lon, lat = np.asarray(lon) * radians, np.asarray(lat) * radians
        same_ring = ring_of_vertex[1:] == ring_of_vertex[:-1]
        g = primitive(lat)
        under = -(lon[1:] - lon[:-1]) * (g[1:] + g[:-1]) / 2
        signed = np.bincount(ring_of_vertex[:-1][same_ring], weights=under[same_ring], minlength=len(rings))
        exterior = np.r_[True, part_of_ring[1:] != part_of_ring[:-1]]
        ring_area = np.where(exterior, np.abs(signed), -np.abs(signed))
        part_area = np.bincount(part_of_ring, weights=ring_area, minlength=len(parts))
        return np.bincount(polygon_of_part, weights=part_area, minlength=len(polygons))

    def _scales(self, points: np.ndarray) -> np.ndarray:
        """Square metres per CRS unit² at CRS points (n x 2), by central differences of half a pixel."""
        if self.to_equal_area is None:
            return np.full(len(points), self.unit_area)
        step = 0.5 * math.sqrt(self.pixel_crs_area)
        x, y = points[:, 0], points[:, 1]
        ex, ey = self.to_equal_area.transform(
            np.concatenate([x + step, x - step, x, x]), np.concatenate([y, y, y + step, y - step])
        )
        n = len(points)
        (x1, x0, x3, x2), (y1, y0, y3, y2) = ex.reshape(4, n), ey.reshape(4, n)
        return np.abs((x1 - x0) * (y3 - y2) - (x3 - x2) * (y1 - y0)) / (4 * step * step)

    def _interpolated_scales(self, points: np.ndarray) -> np.ndarray:
        """``_scales`` at many points: exact on a grid of nodes ``GRID_M`` apart, bilinear between them."""
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        spacing = GRID_M / self.metres_per_unit
        nx, ny = int((x1 - x0) / spacing) + 2, int((y1 - y0) / spacing) + 2
        if nx * ny >= len(points):
            return self._scales(points)
        gx, gy = np.linspace(x0, x0 + (nx - 1) * spacing, nx), np.linspace(y0, y0 + (ny - 1) * spacing, ny)
        nodes = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
        grid = self._scales(nodes).reshape(ny, nx)
        fx, fy = (points[:, 0] - x0) / spacing, (points[:, 1] - y0) / spacing
        i, j = np.minimum(fy.astype(np.int64), ny - 2), np.minimum(fx.astype(np.int64), nx - 2)
        ty, tx = fy - i, fx - j
        top = grid[i, j] * (1 - tx) + grid[i, j + 1] * tx
        bottom = grid[i + 1, j] * (1 - tx) + grid[i + 1, j + 1] * tx
        return top * (1 - ty) + bottom * ty

    def _moment_areas(self, polygons: np.ndarray, extent: np.ndarray) -> np.ndarray:
        """Areas with J quadratic about each centroid (module docstring); ``extent`` in CRS units."""
        n = len(polygons)
        parts, polygon_of_part = shapely.get_parts(polygons, return_index=True)
        rings, part_of_ring = shapely.get_rings(parts, return_index=True)
        xy, ring_of_vertex = shapely.get_coordinates(rings, return_index=True)
        polygon_of_ring = polygon_of_part[part_of_ring]
        bounds = shapely.bounds(polygons)
        origin = (bounds[:, :2] + bounds[:, 2:]) / 2  # a local frame per polygon keeps the moments exact
        xy = xy - origin[polygon_of_ring[ring_of_vertex]]
        same_ring = ring_of_vertex[1:] == ring_of_vertex[:-1]
        (x0, y0), (x1, y1) = xy[:-1][same_ring].T, xy[1:][same_ring].T
        ring = ring_of_vertex[:-1][same_ring]
        cross = x0 * y1 - x1 * y0

        def per_ring(values: np.ndarray) -> np.ndarray:
            return np.bincount(ring, weights=values, minlength=len(rings))

        ring_area = per_ring(cross) / 2
        exterior = np.r_[True, part_of_ring[1:] != part_of_ring[:-1]]
        sign = np.where(exterior, 1.0, -1.0) * np.sign(ring_area)  # exteriors add, holes subtract

        def per_polygon(per_ring_values: np.ndarray) -> np.ndarray:
            return np.bincount(polygon_of_ring, weights=per_ring_values * sign, minlength=n)

        area = per_polygon(ring_area)
        cx = per_polygon(per_ring((x0 + x1) * cross) / 6) / area
        cy = per_polygon(per_ring((y0 + y1) * cross) / 6) / area
        mxx = per_polygon(per_ring((x0 * x0 + x0 * x1 + x1 * x1) * cross) / 12) - area * cx * cx
        myy = per_polygon(per_ring((y0 * y0 + y0 * y1 + y1 * y1) * cross) / 12) - area * cy * cy
        mxy = per_polygon(per_ring((x0 * y1 + 2 * x0 * y0 + 2 * x1 * y1 + x1 * y0) * cross) / 24)
        mxy -= area * cx * cy
        # J and its second derivatives at the centroid, by differences a quarter of the extent wide
        h = np.maximum(extent / 4, math.sqrt(self.pixel_crs_area))
        offsets = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]
        cx, cy = cx + origin[:, 0], cy + origin[:, 1]
        points = np.concatenate([np.column_stack([cx + dx * h, cy + dy * h]) for dx, dy in offsets])
        j, jx1, jx0, jy1, jy0, j11, j10, j01, j00 = self._interpolated_scales(points).reshape(9, n)
        jxx, jyy = (jx1 - 2 * j + jx0) / h**2, (jy1 - 2 * j + jy0) / h**2
        jxy = (j11 - j10 - j01 + j00) / (4 * h**2)
        return j * area + (jxx * mxx + 2 * jxy * mxy + jyy * myy) / 2

    def _transformed_areas(self, polygons: np.ndarray) -> np.ndarray:
        """Areas from every vertex in the equal-area projection, edges cut to at most ``SEGMENT_M`` (the
        shoelace formula per ring, in bulk: shapely.segmentize is slow on polygons with many holes)."""
        parts, polygon_of_part = shapely.get_parts(polygons, return_index=True)
        rings, part_of_ring = shapely.get_rings(parts, return_index=True)
        xy, ring_of_vertex = shapely.get_coordinates(rings, return_index=True)
        # the segments of every ring (closed rings repeat their first vertex: no wrap-around needed)
        same_ring = ring_of_vertex[1:] == ring_of_vertex[:-1]
        start, end, ring = xy[:-1][same_ring], xy[1:][same_ring], ring_of_vertex[:-1][same_ring]
        pieces = np.ceil(np.hypot(*(end - start).T) * self.metres_per_unit / SEGMENT_M).astype(np.int64)
        pieces = np.maximum(pieces, 1)
        segment = np.repeat(np.arange(len(start)), pieces)
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)
        t = (np.arange(len(segment)) - first) / pieces[segment]
        points = start[segment] + (end[segment] - start[segment]) * t[:, None]  # each ring, once round
        x, y = self.to_equal_area.transform(points[:, 0], points[:, 1])
        ring_of_point = ring[segment]
        following = np.arange(1, len(points) + 1)
        last = np.r_[ring_of_point[1:] != ring_of_point[:-1], True]
        following[last] = np.flatnonzero(np.r_[True, last[:-1]])  # a ring's last point closes on its first
        cross = x * y[following] - x[following] * y
        signed = np.bincount(ring_of_point, weights=cross, minlength=len(rings)) / 2
        exterior = np.r_[True, part_of_ring[1:] != part_of_ring[:-1]]
        ring_area = np.where(exterior, np.abs(signed), -np.abs(signed))
        part_area = np.bincount(part_of_ring, weights=ring_area, minlength=len(parts))
        return np.bincount(polygon_of_part, weights=part_area, minlength=len(polygons))


def _equal_area_transformer(crs, centre: tuple[float, float], name: str = "the raster"):
    """pyproj Transformer from ``crs`` to an equal-area projection of its own ellipsoid centred on
    ``centre`` (CRS coordinates); None for a CRS without a datum.

    A CRS that PROJ cannot transform (a projection method it lacks, a geocentric CRS) or a centre outside
    the CRS's domain (a wrong geotransform) has no true areas: one :class:`InputError` line naming
    ``name`` says so, instead of pyproj's error from deep inside.
    """
    import pyproj
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion
    from pyproj.exceptions import CRSError, ProjError

    try:
        source = pyproj.CRS.from_wkt(crs.to_wkt())
        geodetic = source.geodetic_crs
        if geodetic is None:
            return None
        lon, lat = pyproj.Transformer.from_crs(source, geodetic, always_xy=True).transform(*centre)
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise ProjError("the point lies outside the area the CRS can map")
        degrees = math.degrees(geodetic.axis_info[0].unit_conversion_factor)  # 0.9 for grads
        target = ProjectedCRS(
            LambertAzimuthalEqualAreaConversion(lat * degrees, lon * degrees), geodetic_crs=geodetic
        )
        return pyproj.Transformer.from_crs(source, target, always_xy=True)
    except (CRSError, ProjError) as error:
        from geoseg.errors import InputError
        from geoseg.raster.grids import crs_label

        reason = " ".join(str(error).split(": (Internal Proj Error: ")[-1].rstrip(")").split())
        raise InputError(
            f"{name}: PROJ cannot map the raster's centre ({centre[0]:.10g}, {centre[1]:.10g}) in its CRS "
            f"({crs_label(crs)}) to latitude and longitude ({reason}), so areas in square metres cannot be "
            "computed; check the CRS and the geotransform (gdalinfo) and fix them (gdal_edit.py -a_srs)"
        ) from error
