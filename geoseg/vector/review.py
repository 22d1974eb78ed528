"""Wrong pixels (or the pixels changed between two maps) as polygons a person reviews in QGIS, largest first.

``evaluate --errors`` stages a raster on the prediction's grid that holds, for each wrongly classified
pixel, the pair (truth, predicted) as one code (``truth × classes + predicted + 1``; 0 elsewhere), then turns
it into polygons with the vectorizer (:mod:`geoseg.vector.vectorize`: exact pixel outlines, regions merged,
true areas on the ellipsoid) and writes them with ``truth`` and ``predicted`` class names and ``area_m2``,
sorted by area, largest first. When the map's classes have colours, the polygons are styled for QGIS
(:mod:`geoseg.styles`), categorized by the class the map put there (``predicted``; ``to`` for changes) in
its colour: inside a GeoPackage, as a ``.qml`` beside other formats, part of the same atomic output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg.errors import OutputError
from geoseg.model.card import ClassInfo
from geoseg.styles import write_polygons_style
from geoseg.vector.output import atomic_vector_output, check_vector_output, creation_options, output_driver

_LAYER = "errors"  # the staged polygons' layer


class ErrorRaster:
    """A staged uint16 raster of (truth, predicted) codes on a raster's grid, written window by window."""

    def __init__(self, like, classes: int, folder: str) -> None:
        import rasterio

        self.classes = classes
        self.path = Path(folder) / "errors.tif"
        profile = dict(
            driver="GTiff",
            width=like.width,
            height=like.height,
            count=1,
            dtype="uint16" if classes * classes < 65535 else "uint32",
            nodata=0,
            crs=like.crs,
            transform=like.transform,
            tiled=True,
            compress="deflate",
        )
        self.dataset = rasterio.open(self.path, "w", **profile)

    def write(self, window, truth: np.ndarray, predicted: np.ndarray, valid: np.ndarray) -> None:
        wrong = valid & (truth != predicted)
        codes = np.zeros(truth.shape, dtype=self.dataset.dtypes[0])
        codes[wrong] = truth[wrong].astype(np.int64) * self.classes + predicted[wrong] + 1
        self.dataset.write(codes, 1, window=window)

    def close(self) -> None:
        self.dataset.close()


def staging_folder(output: str | os.PathLike) -> tempfile.TemporaryDirectory:
    """A hidden folder beside ``output`` for the staged raster and polygons (one file system)."""
    folder = Path(output).resolve().parent
    return tempfile.TemporaryDirectory(prefix=".geoseg-errors-", dir=folder)


def check_errors_output(path: str | os.PathLike, overwrite: bool, inputs: Sequence, styled: bool) -> None:
    """Refuse, before any work, an errors output (with its style, when ``styled``) that cannot be written."""
    if output_driver(path) == "Parquet":
        raise OutputError(f"{path}: error polygons are written as .gpkg, .fgb, .geojson or .shp")
    check_vector_output(path, overwrite, styled=styled, inputs=inputs)


def write_error_polygons(
    staged: ErrorRaster,
    names: Sequence[str],
    output: str | os.PathLike,
    overwrite: bool,
    fields: tuple[str, str] = ("truth", "predicted"),
    classes: Sequence[ClassInfo] | None = None,
    inputs: Sequence[str | os.PathLike] = (),
) -> int:
    """Vectorize the staged codes into ``output`` (the two classes under ``fields``, area_m2; largest
    first); the count. Two maps compared write their changes so, as ``("from", "to")``. ``classes``
    (names and colours) style the polygons by the second field; ``inputs``: as for
    :func:`~geoseg.vector.output.atomic_vector_output`."""
    import pyogrio
    import shapely
    from pyogrio.raw import write

    from geoseg.vector.vectorize import vectorize

    staged.close()
    polygons = staged.path.with_suffix(".gpkg")
    vectorize(staged.path, polygons, layer=_LAYER)
    meta, _, wkb, (codes, areas) = pyogrio.raw.read(polygons, layer=_LAYER, columns=["class_id", "area"])
    order = np.argsort(-areas, kind="stable")
    codes, areas, wkb = codes[order].astype(np.int64) - 1, areas[order], wkb[order]
    label = np.array(list(names), dtype=object)
    driver = output_driver(output)
    layer = Path(output).stem
    styled = classes is not None
    with atomic_vector_output(output, overwrite, styled=styled, inputs=inputs) as tmp:
        write(
            tmp,
            wkb if len(wkb) else shapely.to_wkb(np.empty(0, object)),
            field_data=[label[codes // staged.classes], label[codes % staged.classes], areas],
            fields=[*fields, "area_m2"],
            geometry_type="Polygon",
            crs=meta["crs"],
            driver=driver,
            layer=layer,
            dataset_options=creation_options(driver),
        )
        if styled:
            write_polygons_style(tmp, layer, classes, fields[1])
    return len(codes)
