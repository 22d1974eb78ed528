"""``vectorize``: a class raster to polygons, one per connected region, at any raster size.

The pipeline, cell by cell of the split grid: read (classes and the valid mask) -> optional sieve
(``sieve.py``) -> polygonize the cell whole with GDAL (``polygonize.py``) -> batches of polygons -> optional
coverage simplification (``simplify.py``) -> world coordinates, class names, true areas (``area.py``) ->
write (``output.py``).

The split grid (``split_polygons_at`` pixels, pixel-aligned from the raster's top-left corner) bounds the
work: a region crossing a grid line becomes one polygon per cell, so memory depends on the cell size only,
even when one region spans the whole scene (a background class does). Without it the raster is one cell:
regions are never cut, and memory grows with the raster.
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
from geoseg.raster.classes import check_class_raster, read_class_names, read_classes
from geoseg.raster.grids import crs_label, placement
from geoseg.raster.reading import check_decodable, read_failures
from geoseg.styles import style_sidecar
from geoseg.vector.area import GroundArea
from geoseg.vector.blocks import BlockGrid, BlockReader, Window
from geoseg.vector.output import FeatureWriter, atomic_vector_output, output_driver
from geoseg.vector.polygonize import apply_affine, polygonize_window
from geoseg.vector.sieve import sieve
from geoseg.vector.simplify import simplify_coverage

# cells of the split grid, in pixels: on a 4,000² map whose background spans it, 1024 / 2048 / 4096 took
# 16.1 / 16.5 / 14.9 s and peaked at 269 / 439 / 604 MiB (benchmarks/vectorize.py); the largest cuts fewest
# regions, at a peak that stays flat however large the raster
DEFAULT_SPLIT = 4096
# each cell is read once, straight into its array, so a small GDAL block cache suffices
GDAL_CACHE_MB = 8
# complete polygons are simplified and written in batches of about this many vertices (with a million, a
# 20,000² run peaked 1.43x a 5,000² one, whose whole output fits in one batch; 1.3x with this)
BATCH_VERTICES = 250_000
# the ids a Shapefile's Integer64 field (18 characters, a minus sign included) holds
SHAPEFILE_MAX_ID, SHAPEFILE_MIN_ID = 10**18 - 1, -(10**17 - 1)


@dataclass(frozen=True)
class VectorizeResult:
    """What ``vectorize`` wrote: the files, polygon counts per class name, and the time it took."""

    input: Path
    output: Path
    polygons: dict[str, int]
    seconds: float
    style: Path | None = None  # the QGIS style beside the output (a GeoPackage holds its own inside)

    def to_dict(self) -> dict:
        record = {
            "input": str(self.input),
            "output": str(self.output),
            "polygons": dict(self.polygons),
            "seconds": round(self.seconds, 3),
        }
        if self.style is not None:
            record["style"] = str(self.style)
        return record


def vectorize(
    classes_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    classes: Sequence[str | int] | None = None,
    min_area: float | None = None,
    min_pixels: int | None = None,
    simplify: float | None = None,
    connectivity: int = 4,
    split_polygons_at: int = DEFAULT_SPLIT,
    layer: str | None = None,
    keep_crs: bool = False,
    styles: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    read_from: str | os.PathLike | None = None,
) -> VectorizeResult:
    """Polygonize an integer class raster into ``output_path`` (.gpkg, .fgb, .geojson, .parquet or .shp).

    One feature per connected region (``connectivity`` 4 or 8, as GDAL) with ``class_id``, ``class_name``
    (from the names ``geoseg predict`` stores, else the id as text) and ``area`` (square metres on the
    ellipsoid, in any CRS). Regions crossing the lines of a pixel-aligned grid of ``split_polygons_at``
    pixels are cut there (0: never, at a memory cost that grows with the raster). Nodata pixels give no
    polygon. ``classes`` keeps only those classes (names or ids).
    ``min_area`` (square metres) or ``min_pixels`` first merges smaller regions into their neighbours, so no
    polygon is smaller, also after ``simplify`` (ground metres, about the largest boundary shift), which
    simplifies each shared boundary once, so neighbours keep no gaps or overlaps. GeoJSON is written in
    WGS84 longitude/latitude (RFC 7946) unless ``keep_crs``; every other format keeps the raster's CRS, so
    ``keep_crs`` asks what it does anyway and is accepted (a caller may pass it whatever the format).
    ``styles``: for a raster that names its classes, colour the polygons by class for QGIS (a GeoPackage
    holds the style, other formats get a ``.qml`` beside them; see :mod:`geoseg.styles`).
    ``progress(done, total)`` counts cells. ``read_from``: the file holding ``classes_path`` while it is
    not yet under that name (``predict`` vectorizes its staged class raster); messages name ``classes_path``.
    """
    started = time.perf_counter()
    classes_path, output_path = Path(classes_path), Path(output_path)
    _check_options(min_area, min_pixels, simplify, connectivity, split_polygons_at)
    driver = output_driver(output_path)
    check_output_path(output_path, overwrite, inputs=[classes_path, *([read_from] if read_from else [])])

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():  # said once, in geoseg's words, by _Georeference
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(classes_path if read_from is None else read_from)
    except RasterioIOError as error:
        raise InputError(f"{classes_path}: cannot open as a raster ({_first_line(error)})") from None
    with dataset, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        _check_raster(dataset, classes_path)
        refuse_unmapped(placement(dataset), classes_path)
        names = read_class_names(dataset) or []
        legend = read_classes(dataset) if styles else None
        selected = _select_classes(classes, names, classes_path)
        if driver == "GeoJSON":
            _check_geojson_crs(dataset, classes_path, output_path, keep_crs)
        geo = _Georeference(dataset, classes_path, geojson=driver == "GeoJSON" and not keep_crs)
        ground = geo.ground

        height, width = dataset.height, dataset.width
        read = _dataset_reader(dataset, classes_path)
        # unselected classes need no polygons at all, unless simplification needs them as neighbours
        wanted = np.array(sorted(selected)) if selected is not None and simplify is None else None
        tolerance_px = simplify / ground.pixel_size_m if simplify else None

        def cell_min_pixels(window: Window) -> int | None:
            """--min-area in pixels with the smallest true pixel area of the cell: no region under it."""
            if min_area is not None:
                return math.ceil(
                    min_area / ground.min_pixel_area(window.row0, window.col0, window.row1, window.col1)
                )
            return min_pixels

        def keeps_pixel_edges(pixel_polygons: np.ndarray) -> np.ndarray:
            """Simplified polygons that must keep their pixel outline instead: those under the minimum, and
            those that the affine's rounding makes invalid in CRS coordinates (a part's vertex lying exactly
            on another's diagonal edge in pixel space may end up across it, as at 0.0001 degree pixels)."""
            world = geo.to_world(pixel_polygons)
            rejected = ~shapely.is_valid(world)
            if min_area is not None:
                rejected |= ground.areas(world) < min_area
            elif (min_pixels or 0) > 1:
                rejected |= shapely.area(pixel_polygons) < min_pixels
            return rejected

        def class_name(value: int) -> str:
            return names[value] if 0 <= value < len(names) else str(value)

        counts: dict[int, int] = {value: 0 for value in selected} if selected is not None else {}
        wide_ids = np.dtype(dataset.dtypes[0]) in (
            np.dtype(np.uint32),
            np.dtype(np.int64),
            np.dtype(np.uint64),
        )
        geometry_type = "MultiPolygon" if connectivity == 8 else "Polygon"
        with atomic_vector_output(
            output_path, overwrite, styled=legend is not None, inputs=[classes_path]
        ) as tmp:
            writer = FeatureWriter(
                tmp,
                driver,
                layer=layer or output_path.stem,
                crs_wkt=geo.output_crs_wkt,
                projjson=geo.projjson,
                geometry_type=geometry_type,
                wide_ids=wide_ids,
                rfc7946=geo.rfc7946,
                final=output_path,
                classes=legend,
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
                    if tolerance_px:  # in pixel space, where shared edges meet exactly
                        polygons = simplify_coverage(polygons, tolerance_px, keeps_pixel_edges)
                        polygons = geo.to_world(polygons)
                    if selected is not None:
                        keep = np.isin(values, list(selected))
                        polygons, values = polygons[keep], values[keep]
                    if not len(values):
                        return
                    if driver == "ESRI Shapefile":
                        _check_ids_fit_shapefile(values, output_path)
                    if geo.transform.determinant > 0:  # south-up, mirrored, pixel space: reversed rings
                        polygons = shapely.orient_polygons(polygons)  # exterior counter-clockwise
                    if connectivity == 8:
                        polygons = _as_multipolygons(polygons)
                    areas = ground.areas(polygons)
                    present, index = np.unique(values, return_inverse=True)
                    for value, count in zip(present, np.bincount(index.ravel()), strict=True):
                        counts[int(value)] = counts.get(int(value), 0) + int(count)
                    labels = np.array([class_name(int(v)) for v in present], dtype=object)[index.ravel()]
                    writer.write(shapely.to_wkb(geo.for_output(polygons)), values, labels, areas)

                grid = BlockGrid(height, width, split_polygons_at or max(height, width))
                for done, (_, _, window) in enumerate(grid, start=1):
                    cell, valid = read(window)
                    _check_ids_fit_int64(cell, valid, classes_path)
                    threshold = cell_min_pixels(window)
                    if threshold is not None and threshold > 1:
                        cell, valid = sieve(cell, valid, threshold, connectivity)
                    if wanted is not None:
                        keep = np.isin(cell, wanted)
                        valid = keep if valid is None else keep & valid
                    # straight to CRS coordinates, unless simplification needs the pixel grid
                    world = None if tolerance_px else geo.transform
                    polygons, values = polygonize_window(cell, valid, window, connectivity, world)
                    del cell, valid
                    if progress is not None:
                        progress(done, len(grid))
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
    style = style_sidecar(output_path) if legend is not None else None
    return VectorizeResult(classes_path, output_path, polygons, time.perf_counter() - started, style)


def _check_options(
    min_area: float | None, min_pixels: int | None, simplify: float | None, connectivity: int, split: int
) -> None:
    if connectivity not in (4, 8):
        raise ConfigurationError(f"connectivity={connectivity}: give 4 or 8")
    if min_area is not None and min_pixels is not None:
        raise ConfigurationError("give either min_area=M2 or min_pixels=N, not both")
    if min_area is not None and not min_area >= 0:
        raise ConfigurationError(f"min_area={min_area}: give zero or more square metres")
    if min_pixels is not None and min_pixels < 0:
        raise ConfigurationError(f"min_pixels={min_pixels}: give zero or more")
    if simplify is not None and not simplify >= 0:
        raise ConfigurationError(f"simplify={simplify}: give zero or more metres")
    if split != 0 and split < 16:
        raise ConfigurationError(f"split_polygons_at={split}: give 0 (never split) or at least 16 pixels")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _check_raster(dataset, path: Path) -> None:
    check_class_raster(dataset, str(path), "vectorize")
    check_decodable(dataset, [1], str(path))  # before any warning about the raster


def check_vectorizable(georef: dict, width: int, height: int, path: str | os.PathLike) -> None:
    """Refuse, before any inference, a scene whose class raster ``vectorize`` would refuse for its
    georeferencing (``georef`` as :func:`geoseg.raster.writing.georeferencing` gives it): placed only by GCPs
    or RPCs, or in a CRS where PROJ cannot compute true areas (see :class:`GroundArea`)."""
    if georef["transform"] is None:
        refuse_unmapped("gcps" if georef["gcps"] else "rpcs", path)
    if georef["crs"] is not None:
        GroundArea(georef["crs"], georef["transform"], width, height, str(path))


def refuse_unmapped(kind: str | None, path: str | os.PathLike) -> None:
    """Refuse a raster placed only by GCPs or RPCs (``kind`` as ``geoseg.raster.grids.placement`` says; also
    behind an identity geotransform, as a VRT with an SRS may be): its pixel grid is not the map, and
    polygons of it would lie in pixel space. ``predict --vectorize`` asks before any inference."""
    if kind not in ("gcps", "rpcs"):
        return
    what, how = {
        "gcps": ("ground control points (GCPs)", "gdalwarp -t_srs <CRS>"),
        "rpcs": ("RPCs", "gdalwarp -rpc -t_srs <CRS>"),
    }[kind]
    raise InputError(
        f"{path}: is placed by {what}, not by a geotransform; warp it onto a map grid first "
        f"({how} {Path(path).name} warped.tif) to vectorize it"
    )


def _check_geojson_crs(dataset, path: Path, output_path: Path, keep_crs: bool) -> None:
    """GeoJSON holds WGS84 longitude/latitude, or (``keep_crs``) a CRS named by its EPSG code: refuse a CRS
    that can be neither, rather than write coordinates that readers would take for longitude/latitude."""
    from rasterio.warp import transform

    crs = dataset.crs
    if crs is None or (keep_crs and crs.to_epsg() is not None):
        return
    x, y = dataset.transform @ (dataset.width / 2, dataset.height / 2)
    try:
        transform(crs, "EPSG:4326", [x], [y])
        to_lonlat = True
    except Exception:  # GDAL's CPLE_* errors: no operation to WGS84 (a local engineering CRS)
        to_lonlat = False
    if to_lonlat and not keep_crs:
        return
    if keep_crs:
        instead = "drop keep_crs=True (WGS84 longitude/latitude) or " if to_lonlat else ""
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
    from rasterio.windows import Window as RioWindow

    flags = dataset.mask_flag_enums[0]
    nodata = dataset.nodata

    def read(window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        rio_window = RioWindow(window.col0, window.row0, window.width, window.height)
        with read_failures(path):
            classes = dataset.read(1, window=rio_window)
            if MaskFlags.all_valid in flags:
                return classes, None
            if list(flags) == [MaskFlags.nodata] and nodata is not None:
                return classes, classes != nodata
            return classes, dataset.read_masks(1, window=rio_window) > 0

    return read


def _check_ids_fit_int64(cell: np.ndarray, valid: np.ndarray | None, path: Path) -> None:
    """Refuse uint64 class ids that no vector format can hold (64-bit signed integer fields), rather than
    write them wrapped round to negative ids."""
    if cell.dtype != np.uint64:
        return
    ids = cell if valid is None else cell[valid]
    limit = np.iinfo(np.int64).max
    if ids.size and ids.max() > limit:
        raise InputError(
            f"{path}: holds class id {int(ids.max())}, above {limit}, the largest a vector attribute "
            "(a 64-bit integer) can hold; renumber the classes first"
        )


def _check_ids_fit_shapefile(values: np.ndarray, output_path: Path) -> None:
    """A Shapefile's integer fields hold 18 characters: GDAL stores longer ids as reals, which readers
    round (two classes over 2^53 then share one id), so refuse them."""
    outside = values[(values > SHAPEFILE_MAX_ID) | (values < SHAPEFILE_MIN_ID)]
    if outside.size:
        raise OutputError(
            f"{output_path}: class id {int(outside[0])} has more digits than a Shapefile's integer field "
            "holds (18 characters); write .gpkg, .fgb or .parquet"
        )


def _as_multipolygons(polygons: np.ndarray) -> np.ndarray:
    single = shapely.get_type_id(polygons) == shapely.GeometryType.POLYGON
    if single.any():
        polygons = polygons.copy()
        polygons[single] = shapely.multipolygons(polygons[single], indices=np.arange(int(single.sum())))
    return polygons


class _Georeference:
    """Pixel space to the raster's coordinates, the output CRS, and true areas (``ground``)."""

    def __init__(self, dataset, path: Path, geojson: bool) -> None:
        crs, transform = dataset.crs, dataset.transform
        if placement(dataset) is None:  # a CRS without a geotransform: pixel numbers are no coordinates in it
            crs = None
        self.transform = transform
        self.output_crs_wkt = crs.to_wkt() if crs else None
        self.projjson = crs.to_dict(projjson=True) if crs else None
        # GDAL's GeoJSON writer reprojects to WGS84 longitude/latitude when asked for RFC 7946
        self.rfc7946 = geojson and crs is not None
        if crs is None:
            stays = " (GeoJSON stays in raster coordinates, not longitude/latitude)" if geojson else ""
            if transform.is_identity:
                what = (
                    "has no georeferencing (no CRS, geotransform, GCPs or RPCs)"
                    if dataset.crs is None
                    else f"has a CRS ({crs_label(dataset.crs)}) but no geotransform, GCPs or RPCs"
                )
                message = (
                    f"{path}: {what}; polygons are in pixel coordinates, areas in square pixels, and outputs "
                    "carry no CRS"
                )
            else:
                message = f"{path}: has no CRS; areas are in square raster units and outputs carry no CRS"
            warnings.warn(message + stays, GeosegWarning, stacklevel=3)
        self.ground = GroundArea(crs, transform, dataset.width, dataset.height, str(path))
        # GDAL's RFC 7946 writer leaves polygons east of 360 degrees empty: longitudes in the 0-360 (or any
        # other) convention are moved by whole turns so that the raster's west edge lies in [-180, 180)
        self.lon_shift = 0.0
        if self.rfc7946 and crs.is_geographic and crs.units_factor[0] in ("degree", "degrees"):
            corners = [(0, 0), (dataset.width, 0), (0, dataset.height), (dataset.width, dataset.height)]
            west = min((transform @ corner)[0] for corner in corners)
            self.lon_shift = -360.0 * math.floor((west + 180.0) / 360.0)

    def for_output(self, polygons: np.ndarray) -> np.ndarray:
        """Polygons in CRS coordinates as they are written (longitudes moved by whole turns, see above)."""
        if not self.lon_shift:
            return polygons
        return shapely.transform(polygons, lambda xy: xy + (self.lon_shift, 0.0))

    def to_world(self, polygons: np.ndarray) -> np.ndarray:
        return shapely.transform(polygons, lambda xy: apply_affine(xy, self.transform))
