"""Simplify shared boundaries once for both neighbours (GEOS coverage simplification), so no gaps open.

``shapely.coverage_simplify`` needs an *edge-matched* coverage: a vertex of one polygon lying on its
neighbour's edge must be a vertex of that edge too. Pixel polygons break this at T-junctions (GDAL and
the seam union drop collinear vertices), so edges are first cut at every pixel corner; the coordinates are
integers in pixel space, which keeps that exact.

Bounded memory: the coverage is simplified one batch of complete polygons at a time, with the batch's
outer boundary kept fixed (``simplify_boundary=False``). An edge between two polygons of different batches
is therefore kept exactly as the pixel edges (both sides agree on it), and so is the outline of the valid
area (the raster edge and nodata): the polygons still tile exactly the valid pixels. Batches hold about a
million vertices, so such unsimplified edges are rare.
"""

from __future__ import annotations

import numpy as np
import shapely


def simplify_coverage(polygons: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Coverage-simplify pixel-space polygons by ``tolerance_px`` pixels, keeping the batch outline fixed."""
    if not len(polygons) or tolerance_px <= 0:
        return polygons
    noded = shapely.segmentize(polygons, 1.0)
    simplified = shapely.coverage_simplify(noded, tolerance_px, simplify_boundary=False)
    # drop the vertices left on straight runs (the fixed outline keeps its 1-pixel spacing otherwise)
    return shapely.simplify(simplified, 0.0)
