"""Class rasters to polygons: blockwise sieve, polygonizing, seam merge, coverage simplification, outputs."""
