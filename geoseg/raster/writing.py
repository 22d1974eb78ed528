"""Writing result rasters: georeferencing copied exactly, tiled and compressed, then cloud-optimized.

Rasters are written window by window into a tiled GeoTIFF under a hidden temporary name, then copied into
COG layout (overviews built by GDAL from the finished data, which chunked writers get wrong otherwise), and
only then renamed into place by :func:`geoseg.atomic.atomic_output`. Class rasters mark invalid pixels with
nodata 255 (never a class); rasters whose every value 0..255 is data (confidence, probabilities) carry
validity in GDAL's internal per-dataset mask instead, which the COG copy keeps, overviews included.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile
from rasterio.shutil import copy as gdal_copy
from rasterio.windows import Window

from geoseg.atomic import atomic_output
from geoseg.errors import ConfigurationError, GeosegWarning, OutputError, one_line
from geoseg.raster.grids import placement

BLOCK_SIZE = 512


# What ``--compress`` offers: DEFLATE and LZW every TIFF reader decodes; ZSTD and LERC are smaller or faster
# but web viewers (geotiff.js), GeoServer, ArcMap and some QGIS packagings cannot open them.
CODECS = ("deflate", "lzw", "zstd", "lerc", "none")
# measured on real class maps (benchmarks/compression.py, numbers in its docstring)
DEFAULT_CODEC = "deflate"


def _writes(codec: str) -> bool:
    """Whether this GDAL build writes GeoTIFFs with ``codec`` (builds may lack ZSTD, LERC...)."""
    profile = dict(driver="GTiff", width=1, height=1, count=1, dtype="uint8", compress=codec)
    try:
        with warnings.catch_warnings(), MemoryFile() as memory:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with memory.open(**profile) as probe:
                probe.write(np.zeros((1, 1, 1), np.uint8))
            with memory.open() as probe:
                found = probe.compression.name.lower() if probe.compression else "none"
    except RasterioError:
        return False
    return found == codec


@functools.lru_cache(maxsize=1)
def available_codecs() -> tuple[str, ...]:
    """The :data:`CODECS` this GDAL build writes, in that order."""
    return tuple(codec for codec in CODECS if codec == "none" or _writes(codec))


def check_codec(codec: str) -> str:
    """``codec`` in lower case, or a :class:`ConfigurationError` naming the codecs this GDAL writes (before
    any work: a missing one would otherwise fail at the first finished scene)."""
    name = codec.strip().lower()
    if name not in available_codecs():
        lacking = "this GDAL build cannot write it" if name in CODECS else "unknown codec"
        raise ConfigurationError(
            f"compression {codec!r}: {lacking}; use one of {', '.join(available_codecs())}"
        )
    return name


@functools.lru_cache(maxsize=1)
def part_compression() -> str:
    """The codec of the intermediate parts, which only geoseg reads: ZSTD where this GDAL build has it
    (smaller and faster than DEFLATE), else DEFLATE."""
    return "ZSTD" if "zstd" in available_codecs() else "DEFLATE"


def georeferencing(dataset, name: str | None = None) -> dict[str, Any]:
    """CRS and transform (or GCPs), and RPCs, of ``dataset`` to copy onto an output, exactly as they are.

    A raster with no CRS yields an output with none, and a :class:`GeosegWarning` says so (RPCs need none:
    they map to WGS 84 by definition); a custom WKT CRS without an EPSG code is copied as WKT.
    ``pixel_is_point`` keeps GeoTIFF's PixelIsPoint (``AREA_OR_POINT=Point``): GDAL shifts such a transform
    by half a pixel on reading and back on writing, so an output without the tag would lie half a pixel off
    its input for every reader that does not shift (``GTIFF_POINT_GEO_IGNORE=TRUE``, some other tools).
    """
    name = name or dataset.name
    kind = placement(dataset)
    gcps, gcp_crs = dataset.gcps
    if dataset.crs is None and not gcp_crs and kind != "rpcs":
        detail = "" if kind is not None else " and no georeferencing"
        warnings.warn(f"{name}: has no CRS{detail}; the output will have none", GeosegWarning, stacklevel=2)
    common = {"rpcs": dataset.rpcs, "pixel_is_point": dataset.tags().get("AREA_OR_POINT") == "Point"}
    if kind == "gcps":
        return {"crs": None, "transform": None, "gcps": (gcps, gcp_crs), **common}
    if kind == "rpcs":
        return {"crs": dataset.crs, "transform": None, "gcps": None, **common}
    return {"crs": dataset.crs, "transform": dataset.transform, "gcps": None, **common}


def tiled_profile(
    width: int,
    height: int,
    count: int,
    nodata: float | None,
    georef: dict[str, Any],
    *,
    categorical: bool = True,
) -> dict:
    """Profile of the intermediate tiled GeoTIFF (BigTIFF when it could pass 4 GB); the horizontal predictor
    only on continuous values (see :func:`to_cog`)."""
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": "uint8",
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        "compress": part_compression(),
        "predictor": 1 if categorical else 2,
        "interleave": "pixel" if count > 1 else "band",
        "BIGTIFF": "IF_SAFER",
        # One compression thread: GDAL's worker threads (GDAL_NUM_THREADS=ALL_CPUS, set for reading) print a
        # libtiff 'ExtraSamples' error for multi-band parts with a per-dataset mask; the COG copy is threaded.
        "NUM_THREADS": "1",
    }
    if georef.get("crs") is not None:
        profile["crs"] = georef["crs"]
    if georef.get("transform") is not None:
        profile["transform"] = georef["transform"]
    return profile


def open_tiled(path: str | os.PathLike, profile: dict, gcps=None):
    """Create the intermediate GeoTIFF; folder problems become :class:`OutputError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path, "w", **profile)
    except RasterioError as error:
        raise OutputError(f"{path}: cannot create output ({one_line(error)})") from error
    if gcps is not None:
        dataset.gcps = gcps
    return dataset


def write_valid_mask(dataset, valid: np.ndarray | None, window: Window) -> None:
    """Write ``window`` of the internal per-dataset mask: 255 where ``valid`` (None: all valid), else 0.

    Every window must be written: GDAL reads a mask block never written as invalid.
    """
    if valid is None:
        mask = np.full((int(window.height), int(window.width)), 255, np.uint8)
    else:
        mask = np.where(valid, np.uint8(255), np.uint8(0))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):  # inside the GeoTIFF, not a .msk side-car
        dataset.write_mask(mask, window=window)


def cog_options(codec: str, categorical: bool) -> dict[str, str]:
    """Creation options of the COG copy for ``codec``. Classes get no horizontal predictor: differences
    between neighbouring class ids are no smaller than the ids, and it made DEFLATE class maps 20 % larger;
    continuous values (confidence, probabilities) get it (19 % smaller). benchmarks/compression.py."""
    codec = check_codec(codec)
    options = {"COMPRESS": codec.upper()}
    if not categorical and codec in ("deflate", "lzw", "zstd"):
        options["PREDICTOR"] = "YES"
    return options


def to_cog(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    categorical: bool = True,
    codec: str = DEFAULT_CODEC,
) -> None:
    """Copy a finished tiled GeoTIFF into cloud-optimized layout with overviews: ``MODE`` for classes
    (never a class that is not there), ``AVERAGE`` for continuous values; compressed with ``codec``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            gdal_copy(
                str(source),
                str(target),
                driver="COG",
                BLOCKSIZE=BLOCK_SIZE,
                OVERVIEW_RESAMPLING="MODE" if categorical else "AVERAGE",
                BIGTIFF="IF_SAFER",
                NUM_THREADS="ALL_CPUS",
                **cog_options(codec, categorical),
            )
    except RasterioError as error:
        raise OutputError(f"{target}: cannot write output ({one_line(error)})") from error


def category_names_xml(names: Sequence[str]) -> str:
    """GDAL PAM XML giving band 1 its category names (what QGIS uses to label a paletted raster)."""
    items = "".join(f"      <Category>{escape(n)}</Category>\n" for n in names)
    return (
        "<PAMDataset>\n"
        '  <PAMRasterBand band="1">\n'
        "    <CategoryNames>\n"
        f"{items}"
        "    </CategoryNames>\n"
        "  </PAMRasterBand>\n"
        "</PAMDataset>\n"
    )


def write_category_names(raster_path: str | os.PathLike, names: Sequence[str]) -> Path:
    """Write ``<raster>.aux.xml`` with the class names, replacing a stale one (it belongs to the raster).

    GeoTIFF cannot hold GDAL category names internally, so QGIS only shows class names in its legend from
    this side-car; the names are also inside the GeoTIFF as a tag (see :mod:`geoseg.raster.classes`).
    """
    target = Path(str(raster_path) + ".aux.xml")
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_text(category_names_xml(names), encoding="utf-8")
    return target
