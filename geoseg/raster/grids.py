"""Where a raster's pixels lie on the ground, and whether two rasters share a pixel grid.

A raster is placed by an affine transform, by ground control points (GCPs) or by rational polynomial
coefficients (RPCs). :func:`check_same_grid` is the one decision "these two rasters cover the same pixels",
used by ``evaluate`` (prediction vs truth) and ``train`` (image vs label): CRSs are compared by what they
define, not how they are written (an EPSG code, its PROJ string and another writer's WKT are the same CRS),
and transforms within a fraction of a *pixel* (:data:`PIXEL_TOLERANCE`), so a grid of 9e-7° pixels shifted by
one pixel is as different as a 1 m grid shifted by 1 m. Two CRSs that differ only in their datum (the same
projection, parameters, units and ellipsoid; older software writes "Unknown datum based upon the WGS 84
ellipsoid" for WGS 84) are one CRS, with a warning, when no pixel moves between them by more than
:data:`DATUM_TOLERANCE_M`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Literal

from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod, Transformer
from pyproj.exceptions import CRSError, ProjError
from rasterio.crs import CRS
from rasterio.transform import from_gcps
from rasterio.windows import Window

from geoseg.errors import GeosegWarning, InputError

PIXEL_TOLERANCE = 0.01  # pixels: two grids whose pixels lie closer than this everywhere are one grid
# Metres on the ground: CRSs differing only in their datum are one CRS when transforming between them moves
# the grid's corners and centre by less: a null transformation moves them by ~1e-9 m, and 1 cm is a fifth of
# the pixel of the finest aerial imagery (5 cm).
DATUM_TOLERANCE_M = 0.01
Placement = Literal["transform", "gcps", "rpcs"]
_RPC_PIXEL_FIELDS = ("line_off", "samp_off", "line_scale", "samp_scale")
_RPC_IGNORED_FIELDS = ("err_bias", "err_rand")  # accuracy estimates, not part of the mapping


def placement(dataset) -> Placement | None:
    """How ``dataset`` is placed on the ground: by a transform, GCPs or RPCs (in that order of precedence,
    since GDAL reports an identity transform for a raster placed otherwise), or None for pixel space."""
    if dataset.transform != Affine.identity():
        return "transform"
    if dataset.gcps[0]:
        return "gcps"
    if dataset.rpcs is not None:
        return "rpcs"
    return None


def same_crs(a: CRS | None, b: CRS | None) -> bool:
    """True when ``a`` and ``b`` define the same coordinate system, however each is written (EPSG code,
    PROJ string, WKT1 from any writer, WKT2); axis order is ignored, as rasters store x then y anyway."""
    if a is None or b is None:
        return a is None and b is None
    if a == b:
        return True
    try:
        return ProjCRS.from_wkt(a.to_wkt()).equals(ProjCRS.from_wkt(b.to_wkt()), ignore_axis_order=True)
    except CRSError:
        return False


def datum_shift(a: CRS, b: CRS, transform: Affine, width: int, height: int) -> float | None:
    """How far, in metres, the corners and the centre of a ``width`` × ``height`` grid placed by ``transform``
    move when taken from ``a`` to ``b``, two CRSs that differ only in their datum (the same kind, projection
    method and parameters, axis units, prime meridian and ellipsoid); None when they differ otherwise, or
    when PROJ knows no way between them."""
    try:
        proj_a, proj_b = ProjCRS.from_wkt(a.to_wkt()), ProjCRS.from_wkt(b.to_wkt())
        if not _differ_only_in_datum(proj_a, proj_b):
            return None
        between = Transformer.from_crs(proj_a, proj_b, always_xy=True)
        to_degrees = Transformer.from_crs(proj_b, proj_b.geodetic_crs, always_xy=True)
        pixels = ((0, 0), (width, 0), (0, height), (width, height), (width / 2, height / 2))
        xs, ys = zip(*(transform @ pixel for pixel in pixels), strict=True)
        moved = between.transform(xs, ys, errcheck=True)
        lon, lat = to_degrees.transform(xs, ys, errcheck=True)
        lon_moved, lat_moved = to_degrees.transform(*moved, errcheck=True)
    except (CRSError, ProjError):
        return None
    geod = Geod(a=proj_b.ellipsoid.semi_major_metre, b=proj_b.ellipsoid.semi_minor_metre)
    distances = geod.inv(lon, lat, lon_moved, lat_moved)[2]
    return max(abs(d) for d in distances)


def _differ_only_in_datum(a: ProjCRS, b: ProjCRS) -> bool:
    if (a.is_projected, a.is_geographic) != (b.is_projected, b.is_geographic) or not (
        a.is_projected or a.is_geographic
    ):
        return False
    ea, eb, pa, pb = a.ellipsoid, b.ellipsoid, a.prime_meridian, b.prime_meridian
    if None in (ea, eb, pa, pb):
        return False
    same_ellipsoid = all(
        math.isclose(x, y, rel_tol=1e-12)
        for x, y in ((ea.semi_major_metre, eb.semi_major_metre), (ea.semi_minor_metre, eb.semi_minor_metre))
    )
    if not same_ellipsoid or pa.longitude != pb.longitude or pa.unit_name != pb.unit_name:
        return False
    if sorted(axis.unit_conversion_factor for axis in a.axis_info) != sorted(
        axis.unit_conversion_factor for axis in b.axis_info
    ):
        return False
    if not a.is_projected:
        return True
    oa, ob = a.coordinate_operation, b.coordinate_operation
    if oa is None or ob is None:
        return False
    if (oa.method_code or oa.method_name.lower()) != (ob.method_code or ob.method_name.lower()):
        return False
    params_a, params_b = _parameters(oa), _parameters(ob)
    return params_a.keys() == params_b.keys() and all(
        math.isclose(value, params_b[key], rel_tol=1e-12, abs_tol=1e-12) for key, value in params_a.items()
    )


def _parameters(operation) -> dict[str, float]:
    """A projection's parameters by EPSG code (or name), in the units of their kind (radians, metres)."""
    return {p.code or p.name.lower(): p.value * p.unit_conversion_factor for p in operation.params}


def crs_label(crs: CRS) -> str:
    """A short name for messages: ``EPSG:32631`` when it has a code, else the CRS's own name."""
    if crs.to_epsg() is not None:
        return crs.to_string()
    try:
        return repr(ProjCRS.from_wkt(crs.to_wkt()).name)
    except CRSError:
        return "a custom CRS"


def pixel_offset(a: Affine, b: Affine, width: int, height: int) -> float:
    """The largest distance, in pixels of ``a`` (invertible), between where ``a`` and ``b`` put the same pixel
    corner of a ``width`` × ``height`` raster (the four corners cover shifts, scales and rotations)."""
    inverse = ~a
    distance = 0.0
    for col, row in ((0, 0), (width, 0), (0, height), (width, height)):
        x, y = inverse @ (b @ (col, row))
        distance = max(distance, math.hypot(x - col, y - row))
    return distance


def grid_difference(a, b, a_name: str, b_name: str) -> str | None:
    """Why the open rasters ``a`` and ``b`` do not cover the same pixels, or None when they do.

    Sizes must match. When both are placed on the ground, they must be placed the same way (transform, GCPs
    or RPCs), in the same CRS (when both name one) and within :data:`PIXEL_TOLERANCE` of a pixel (GCPs are
    compared through the affine transform fitted to them; RPCs coefficient by coefficient). A raster in pixel
    space (a label PNG) matches any raster of its size.
    """
    if (a.width, a.height) != (b.width, b.height):
        return (
            f"{a_name} is {a.width}×{a.height} pixels but {b_name} is {b.width}×{b.height}; "
            "both must cover the same grid"
        )
    kind_a, kind_b = placement(a), placement(b)
    if kind_a is None or kind_b is None:
        return None
    if kind_a != kind_b:
        return (
            f"{a_name} is placed by {_KIND_NAMES[kind_a]} but {b_name} by {_KIND_NAMES[kind_b]}, so they "
            "cannot be matched pixel for pixel; warp one onto the other's grid first (gdalwarp)"
        )
    if kind_a == "rpcs":
        return _rpc_difference(a.rpcs, b.rpcs, a_name, b_name)
    crs_a, crs_b = (a.crs, b.crs) if kind_a == "transform" else (a.gcps[1], b.gcps[1])
    if kind_a == "transform":
        t_a, t_b = a.transform, b.transform
    else:
        t_a, t_b = from_gcps(a.gcps[0]), from_gcps(b.gcps[0])
    if crs_a and crs_b and not same_crs(crs_a, crs_b):
        label_a, label_b = crs_label(crs_a), crs_label(crs_b)
        shift = None if t_a.is_degenerate else datum_shift(crs_a, crs_b, t_a, a.width, a.height)
        if shift is None:
            return f"{a_name} is in {label_a} but {b_name} is in {label_b}; reproject one"
        if shift >= DATUM_TOLERANCE_M:
            return (
                f"{a_name} is in {label_a} but {b_name} is in {label_b}: the same projection on another "
                f"datum, where the same pixel lies up to {shift:.3g} m apart; reproject one"
            )
        warnings.warn(
            f"{a_name} is in {label_a} and {b_name} in {label_b}, whose datums are named differently but "
            f"lie on one another (no pixel moves by {DATUM_TOLERANCE_M} m): taken as one CRS",
            GeosegWarning,
            stacklevel=2,
        )
    if t_a.is_degenerate or t_b.is_degenerate:  # e.g. under three distinct GCPs: compare them as they are
        offset = 0.0 if t_a == t_b and _gcp_values(a) == _gcp_values(b) else math.inf
    else:
        offset = pixel_offset(t_a, t_b, a.width, a.height)
    if offset < PIXEL_TOLERANCE:
        return None
    what = "transforms" if kind_a == "transform" else "GCPs"
    return (
        f"{a_name} and {b_name} have different {what}: the same pixel lies up to {offset:.3g} px apart "
        f"(origin {t_a.c:.10g},{t_a.f:.10g} vs {t_b.c:.10g},{t_b.f:.10g}; pixel {t_a.a:.6g}×{-t_a.e:.6g} vs "
        f"{t_b.a:.6g}×{-t_b.e:.6g}); both must cover the same grid"
    )


_KIND_NAMES = {"transform": "a transform", "gcps": "ground control points", "rpcs": "RPCs"}


def _gcp_values(dataset) -> list[tuple[float, ...]]:
    return [(g.row, g.col, g.x, g.y, g.z or 0.0) for g in dataset.gcps[0]]


def _rpc_difference(a, b, a_name: str, b_name: str) -> str | None:
    """RPCs map ground to image; offsets and scales in image units must agree within the pixel tolerance,
    every other coefficient to nine significant digits."""
    values_a, values_b = a.to_dict(), b.to_dict()
    for key, value in values_a.items():
        if key in _RPC_IGNORED_FIELDS:
            continue
        other = values_b.get(key)
        if key in _RPC_PIXEL_FIELDS:
            same = other is not None and abs(float(value) - float(other)) < PIXEL_TOLERANCE
        else:
            first = [float(v) for v in (value if isinstance(value, list) else [value])]
            second = (
                [] if other is None else [float(v) for v in (other if isinstance(other, list) else [other])]
            )
            same = len(first) == len(second) and all(
                math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(first, second, strict=True)
            )
        if not same:
            return f"{a_name} and {b_name} have different RPCs ({key}); both must cover the same grid"
    return None


def check_same_grid(a, b, a_name: str, b_name: str) -> None:
    """Raise a one-line :class:`InputError` unless ``a`` and ``b`` cover the same pixels
    (see :func:`grid_difference`)."""
    reason = grid_difference(a, b, a_name, b_name)
    if reason is not None:
        raise InputError(reason)


def block_windows(height: int, width: int, size: int, cols: int | None = None) -> Iterator[Window]:
    """Windows of at most ``size`` rows × ``cols`` (default ``size``) columns covering a raster row by row:
    the blocks that keep memory bounded when a whole raster is read (evaluate, sample, training's scan)."""
    cols = cols or size
    for row in range(0, height, size):
        for col in range(0, width, cols):
            yield Window(col, row, min(cols, width - col), min(size, height - row))
