"""``geoseg serve``: a scene's map as web tiles (XYZ, WMTS and a page), its classes computed on demand.

A class tile is rendered from the *regions* that cover it, computed on first request by the code ``predict``
runs (the global tile grid, the same blending and precision) into the work folder ``predict --resume`` uses;
rio-tiler warps finished regions and imagery into Web Mercator tiles.
"""
