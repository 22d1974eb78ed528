"""Class names and colours stored inside class rasters, so QGIS and ``geoseg vectorize`` can read them.

The colour table lives in the GeoTIFF itself; the class names are stored as a dataset tag holding a JSON
list (index -> name) so any GDAL-based tool can read them back without a side-car file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

CLASS_NAMES_TAG = "GEOSEG_CLASS_NAMES"
NODATA_CLASS = 255


def class_colormap(colors: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    """A full 256-entry GDAL colour table: class colours, then transparent black (nodata included)."""
    table = {i: (0, 0, 0, 0) for i in range(256)}
    for index, (r, g, b) in enumerate(colors):
        table[index] = (int(r), int(g), int(b), 255)
    return table


def write_class_metadata(dataset, names: Sequence[str], colors: Sequence[tuple[int, int, int]]) -> None:
    """Store names (tag) and colours (band 1 colour table) on a rasterio dataset opened for writing."""
    dataset.update_tags(**{CLASS_NAMES_TAG: json.dumps(list(names))})
    dataset.write_colormap(1, class_colormap(colors))


def read_class_names(dataset) -> list[str] | None:
    """Class names written by :func:`write_class_metadata`, or None for a raster that has none."""
    text = dataset.tags().get(CLASS_NAMES_TAG)
    if not text:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names
