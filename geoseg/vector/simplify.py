"""Simplify shared boundaries once for both neighbours (GEOS coverage simplification), so no gaps open.

``shapely.coverage_simplify`` needs an *edge-matched* coverage: a vertex of one polygon lying on its
neighbour's edge must be a vertex of that edge too. Pixel polygons break this at T-junctions (GDAL and
the seam union drop collinear vertices), so edges are first cut at every pixel corner; the coordinates are
integers in pixel space, which keeps that exact.

Bounded memory: the coverage is simplified one batch of complete polygons at a time, with the batch's
outer boundary kept fixed (``simplify_boundary=False``). An edge between two polygons of different batches
is therefore kept exactly as the pixel edges (both sides agree on it), and so is the outline of the valid
area (the raster edge and nodata): the polygons still tile exactly the valid pixels. Batches hold about a
quarter of a million vertices (some thousands of polygons), so such unsimplified edges are rare.

Minimum area: simplifying moves boundaries, so a region just over ``--min-area`` could come out under it.
Such polygons keep their pixel edges and the rest of the batch is simplified again, from its pixel edges,
around them (their edges are then part of the fixed outline), until none is under the minimum: a few
rounds at most. Only the last round's result is kept, so this is a coverage by construction: the polygons
kept whole and the simplified ones meet on the fixed outline, which the simplified coverage keeps exactly.
(Sieving in raster space with the area a region will have once simplified cannot promise that: the
simplified area depends on the neighbours, which the sieve changes.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import shapely


def simplify_coverage(
    polygons: np.ndarray,
    tolerance_px: float,
    too_small: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Coverage-simplify pixel-space polygons by ``tolerance_px`` pixels, keeping the batch outline fixed.

    ``too_small(polygons)`` marks polygons that must not come out of it smaller than a minimum area; those
    that would keep their original (pixel) boundary instead.
    """
    if not len(polygons) or tolerance_px <= 0:
        return polygons
    noded = shapely.segmentize(polygons, 1.0)
    fixed = np.zeros(len(polygons), bool)  # polygons keeping their pixel edges
    while True:
        simplified = shapely.coverage_simplify(noded[~fixed], tolerance_px, simplify_boundary=False)
        # drop the vertices left on straight runs (the fixed outline keeps its 1-pixel spacing otherwise)
        simplified = shapely.simplify(simplified, 0.0)
        shrunk = too_small(simplified) if too_small is not None else np.zeros(len(simplified), bool)
        if not shrunk.any():
            break
        fixed[np.flatnonzero(~fixed)[shrunk]] = True
    # only the last round's polygons are kept: each earlier round moved edges shared with a polygon that a
    # later round fixed (keeping a polygon from an earlier round next to them opened gaps and overlaps)
    out = polygons.copy()
    out[~fixed] = simplified
    return out
