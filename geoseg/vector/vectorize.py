"""``vectorize``: a class raster to polygons, one per connected region, at any raster size.

The pipeline, block by block: read (classes and the valid mask) -> optional sieve (``sieve.py``) ->
label and polygonize -> merge pieces across block edges (``polygonize.py``) -> batches of complete polygons
-> optional coverage simplification (``simplify.py``) -> world coordinates, class names, areas -> write
(``output.py``). Memory depends on the block size, the batch size and the polygons still open, not on the
raster size.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from geoseg.atomic import check_output_path
from geoseg.errors import ConfigurationError, GeosegWarning, InputError, OutputError
from geoseg.raster.classes import read_class_names
from geoseg.vector.area import AuthalicCylinder, ellipsoid
from geoseg.vector.blocks import BlockGrid, BlockReader, Window
from geoseg.vector.output import FeatureWriter, atomic_vector_output, output_driver
from geoseg.vector.polygonize import polygonize_raster
from geoseg.vector.sieve import sieved_reader
from geoseg.vector.simplify import simplify_coverage

DEFAULT_BLOCK_SIZE = 1024
# each block is read once (twice at most with a sieve halo), so a small GDAL block cache suffices and keeps
# memory from following the raster size up to the cache limit
GDAL_CACHE_MB = 64
# complete polygons are simplified and written in batches of about this many vertices
BATCH_VERTICES = 1_000_000


@dataclass(frozen=True)
class VectorizeResult:
    """What ``vectorize`` wrote: the files, polygon counts per class name, and the time it took."""

    input: Path
    output: Path
    polygons: dict[str, int]
    seconds: float

    def to_dict(self) -> dict:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "polygons": dict(self.polygons),
            "seconds": round(self.seconds, 3),
        }


def vectorize(
    classes_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    classes: Sequence[str | int] | None = None,
    min_area: float | None = None,
    min_pixels: int | None = None,
    simplify: float | None = None,
    connectivity: int = 4,
    block_size: int = DEFAULT_BLOCK_SIZE,
    layer: str | None = None,
    keep_crs: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> VectorizeResult:
    """Polygonize an integer class raster into ``output_path`` (.gpkg, .fgb, .geojson, .parquet or .shp).

    One feature per connected region (``connectivity`` 4 or 8, as GDAL), never split at block edges, with
    ``class_id``, ``class_name`` (from the names ``geoseg predict`` stores, else the id as text) and
    ``area`` (square metres). Nodata pixels give no polygon. ``classes`` keeps only those classes (names or
    ids).
    ``min_area`` (square metres) or ``min_pixels`` first sieves smaller regions into their neighbours.
    ``simplify`` (metres, about the largest boundary shift) simplifies each shared boundary once, so
    neighbours keep no gaps or overlaps. GeoJSON is written in WGS84 longitude/latitude (RFC 7946) unless
    ``keep_crs``; every other format keeps the raster's CRS. ``progress(done, total)`` counts blocks.
    """
    started = time.perf_counter()
    classes_path, output_path = Path(classes_path), Path(output_path)
    _check_options(min_area, min_pixels, simplify, connectivity, block_size)
    driver = output_driver(output_path)
    check_output_path(output_path, overwrite)

    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        dataset = rasterio.open(classes_path)
    except RasterioIOError as error:
        raise InputError(f"{classes_path}: cannot open as a raster ({_first_line(error)})") from None
    with dataset, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        _check_raster(dataset, classes_path)
        names = read_class_names(dataset) or []
        selected = _select_classes(classes, names, classes_path)
        if driver == "GeoJSON":
            _check_geojson_crs(dataset, classes_path, output_path, keep_crs)
        geo = _Georeference(dataset, classes_path, geojson=driver == "GeoJSON" and not keep_crs)
        if min_area is not None:
            min_pixels = math.ceil(min_area / geo.pixel_area_m2)

        height, width = dataset.height, dataset.width
        read = _dataset_reader(dataset, classes_path)
        if min_pixels is not None and min_pixels > 1:
            read = sieved_reader(read, height, width, min_pixels, connectivity)
        if selected is not None and simplify is None:
            read = _only_classes(read, selected)  # unselected classes need no polygons at all
        tolerance_px = simplify / geo.pixel_size_m if simplify else None

        def class_name(value: int) -> str:
            return names[value] if 0 <= value < len(names) else str(value)

        counts: dict[int, int] = {value: 0 for value in selected} if selected is not None else {}
        wide_ids = np.dtype(dataset.dtypes[0]) in (
            np.dtype(np.uint32),
            np.dtype(np.int64),
            np.dtype(np.uint64),
        )
        geometry_type = "MultiPolygon" if connectivity == 8 else "Polygon"
        with atomic_vector_output(output_path, overwrite) as tmp:
            writer = FeatureWriter(
                tmp,
                driver,
                layer=layer or output_path.stem,
                crs_wkt=geo.output_crs_wkt,
                projjson=geo.projjson,
                geometry_type=geometry_type,
                wide_ids=wide_ids,
                rfc7946=geo.rfc7946,
            )
            try:
                batch: list[np.ndarray] = []
                batch_values: list[np.ndarray] = []
                vertices = 0

                def flush() -> None:
                    polygons = np.concatenate(batch) if batch else np.empty(0, object)
                    values = np.concatenate(batch_values) if batch_values else np.empty(0, np.int64)
                    batch.clear()
                    batch_values.clear()
                    if tolerance_px:
                        polygons = simplify_coverage(polygons, tolerance_px)
                    if selected is not None:
                        keep = np.isin(values, list(selected))
                        polygons, values = polygons[keep], values[keep]
                    if not len(values):
                        return
                    if connectivity == 8:
                        polygons = _as_multipolygons(polygons)
                    world = geo.to_world(polygons)
                    areas = geo.areas(polygons, world)
                    for value, count in zip(*np.unique(values, return_counts=True), strict=True):
                        counts[int(value)] = counts.get(int(value), 0) + int(count)
                    labels = np.array([class_name(int(v)) for v in values], dtype=object)
                    writer.write(shapely.to_wkb(world), values, labels, areas)

                grid = BlockGrid(height, width, block_size)
                for polygons, values in polygonize_raster(read, grid, connectivity, progress):
                    batch.append(polygons)
                    batch_values.append(values)
                    vertices += int(shapely.get_num_coordinates(polygons).sum())
                    if vertices >= BATCH_VERTICES:
                        flush()
                        vertices = 0
                flush()
                writer.finish()
            finally:
                writer.discard()
    polygons = {class_name(value): counts[value] for value in sorted(counts)}
    return VectorizeResult(classes_path, output_path, polygons, time.perf_counter() - started)


def _check_options(
    min_area: float | None, min_pixels: int | None, simplify: float | None, connectivity: int, block_size: int
) -> None:
    if connectivity not in (4, 8):
        raise ConfigurationError(f"connectivity must be 4 or 8, not {connectivity}")
    if min_area is not None and min_pixels is not None:
        raise ConfigurationError("give either a minimum area or a minimum number of pixels, not both")
    if min_area is not None and not min_area >= 0:
        raise ConfigurationError(f"minimum area must be zero or more square metres, not {min_area}")
    if min_pixels is not None and min_pixels < 0:
        raise ConfigurationError(f"minimum pixels must be zero or more, not {min_pixels}")
    if simplify is not None and not simplify >= 0:
        raise ConfigurationError(f"simplify tolerance must be zero or more metres, not {simplify}")
    if block_size < 16:
        raise ConfigurationError(f"block size must be at least 16 pixels, not {block_size}")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _check_raster(dataset, path: Path) -> None:
    if dataset.count != 1:
        raise InputError(
            f"{path}: has {dataset.count} bands; vectorize needs a single-band class raster "
            "(such as the output of geoseg predict)"
        )
    dtype = np.dtype(dataset.dtypes[0])
    if dtype.kind not in "iu":
        raise InputError(
            f"{path}: holds {dtype.name} values; vectorize needs an integer class raster "
            "(such as the output of geoseg predict)"
        )


def _check_geojson_crs(dataset, path: Path, output_path: Path, keep_crs: bool) -> None:
    """GeoJSON holds WGS84 longitude/latitude, or (``keep_crs``) a CRS named by its EPSG code: refuse a CRS
    that can be neither, rather than write coordinates that readers would take for longitude/latitude."""
    from rasterio.warp import transform

    crs = dataset.crs
    if crs is None or (keep_crs and crs.to_epsg() is not None):
        return
    x, y = dataset.transform * (dataset.width / 2, dataset.height / 2)
    try:
        transform(crs, "EPSG:4326", [x], [y])
        to_lonlat = True
    except Exception:  # GDAL's CPLE_* errors: no operation to WGS84 (a local engineering CRS)
        to_lonlat = False
    if to_lonlat and not keep_crs:
        return
    if keep_crs:
        instead = "drop --keep-crs (WGS84 longitude/latitude) or " if to_lonlat else ""
        reason = "GeoJSON can only name a CRS by its EPSG code and"
        raise OutputError(f"{output_path}: {reason} the CRS of {path} has none; {instead}write .gpkg or .fgb")
    raise OutputError(
        f"{output_path}: the CRS of {path} cannot be converted to WGS84 longitude/latitude for GeoJSON; "
        "write .gpkg or .fgb"
    )


def _select_classes(classes: Sequence[str | int] | None, names: list[str], path: Path) -> set[int] | None:
    """Class values for names or ids; an unknown name is an error listing the known ones."""
    if classes is None:
        return None
    by_name = {name: index for index, name in enumerate(names)}
    by_folded = {name.casefold(): index for index, name in enumerate(names)}
    selected = set()
    for item in classes:
        if isinstance(item, (int, np.integer)):
            selected.add(int(item))
            continue
        text = str(item).strip()
        if text in by_name:
            selected.add(by_name[text])
        elif text.casefold() in by_folded:
            selected.add(by_folded[text.casefold()])
        elif text.lstrip("-").isdigit():
            selected.add(int(text))
        else:
            known = ", ".join(names) if names else "none stored; use class ids"
            raise InputError(f"{path}: unknown class {text!r}; class names: {known}")
    return selected


def _dataset_reader(dataset, path: Path) -> BlockReader:
    """Read a window's classes and valid mask (nodata value, internal mask or alpha, GDAL's rules)."""
    from rasterio.enums import MaskFlags
    from rasterio.errors import RasterioError
    from rasterio.windows import Window as RioWindow

    from geoseg.raster.reading import gdal_message

    flags = dataset.mask_flag_enums[0]
    nodata = dataset.nodata

    def read(window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        rio_window = RioWindow(window.col0, window.row0, window.width, window.height)
        try:
            classes = dataset.read(1, window=rio_window)
            if MaskFlags.all_valid in flags:
                return classes, None
            if list(flags) == [MaskFlags.nodata] and nodata is not None:
                return classes, classes != nodata
            return classes, dataset.read_masks(1, window=rio_window) > 0
        except RasterioError as error:
            raise InputError(f"{path}: read failed ({gdal_message(error)})") from error

    return read


def _only_classes(read: BlockReader, selected: set[int]) -> BlockReader:
    wanted = np.array(sorted(selected))

    def read_selected(window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        classes, valid = read(window)
        keep = np.isin(classes, wanted)
        return classes, keep if valid is None else keep & valid

    return read_selected


def _as_multipolygons(polygons: np.ndarray) -> np.ndarray:
    single = shapely.get_type_id(polygons) == shapely.GeometryType.POLYGON
    if single.any():
        polygons = polygons.copy()
        polygons[single] = shapely.multipolygons(polygons[single], indices=np.arange(int(single.sum())))
    return polygons


class _Georeference:
    """Pixel space to the raster's coordinates, and areas in square metres."""

    def __init__(self, dataset, path: Path, geojson: bool) -> None:
        crs, transform = dataset.crs, dataset.transform
        self.transform = transform
        self.pixel_area = abs(transform.determinant)
        self.output_crs_wkt = crs.to_wkt() if crs else None
        self.projjson = crs.to_dict(projjson=True) if crs else None
        # GDAL's GeoJSON writer reprojects to WGS84 longitude/latitude when asked for RFC 7946
        self.rfc7946 = geojson and crs is not None
        self.cylinder = None
        self.degrees = 1.0  # degrees per angular unit of a geographic CRS (0.9 for grads, as in NTF Paris)
        if crs is None:
            warnings.warn(
                f"{path}: has no CRS; areas are in square raster units and outputs carry no CRS"
                + (" (GeoJSON stays in raster coordinates, not longitude/latitude)" if geojson else ""),
                GeosegWarning,
                stacklevel=3,
            )
            self.pixel_area_m2 = self.pixel_area
        elif crs.is_geographic:
            self.cylinder = AuthalicCylinder(*ellipsoid(crs))
            self.degrees = round(math.degrees(crs.units_factor[1]), 12)
            centre_lat = (transform @ (dataset.width / 2, dataset.height / 2))[1] * self.degrees
            north_up = transform.b == 0 and transform.d == 0
            side = math.sqrt(self.pixel_area)
            dlon, dlat = (transform.a, transform.e) if north_up else (side, side)
            self.pixel_area_m2 = self.cylinder.pixel_area(
                centre_lat, dlon * self.degrees, dlat * self.degrees
            )
        else:
            unit = crs.units_factor[1]  # also for engineering (LOCAL_CS) CRSs, which have no "linear" unit
            self.pixel_area_m2 = self.pixel_area * unit * unit
        self.pixel_size_m = math.sqrt(self.pixel_area_m2)

    def to_world(self, polygons: np.ndarray) -> np.ndarray:
        a, b, c, d, e, f = self.transform[:6]

        def affine(xy: np.ndarray) -> np.ndarray:
            x, y = xy[:, 0], xy[:, 1]
            out = np.empty_like(xy)
            out[:, 0] = x * a + c if b == 0 else x * a + y * b + c
            out[:, 1] = y * e + f if d == 0 else x * d + y * e + f
            return out

        return shapely.transform(polygons, affine)

    def areas(self, pixel_polygons: np.ndarray, world_polygons: np.ndarray) -> np.ndarray:
        """Square metres: exact ellipsoidal areas for geographic rasters, scaled planar areas otherwise."""
        if self.cylinder is not None:
            if self.degrees != 1.0:
                world_polygons = shapely.transform(world_polygons, lambda xy: xy * self.degrees)
            return self.cylinder.areas(world_polygons)
        return shapely.area(pixel_polygons) * self.pixel_area_m2
