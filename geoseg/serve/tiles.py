"""Web Mercator tile math over a scene, and tiles rendered by rio-tiler (warping, masks, PNG encoding).

A tile's footprint becomes a window of scene pixels (:func:`footprint`); class tiles are warped from an
in-memory GeoTIFF of that window's finished classes (nearest neighbour, so each tile pixel is a pixel of the
batch raster), image tiles straight from the scene. Tiles coarser than :data:`MAX_COMPUTE_STEP` scene pixels
per tile pixel never start a computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import morecantile
import numpy as np
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader

from geoseg.raster.classes import NODATA_CLASS

TILE = 256
TMS = morecantile.tms.get("WebMercatorQuad")
MAX_COMPUTE_STEP = 4  # a tile pixel spanning more scene pixels than this only shows finished regions
MAX_ZOOM = 24
# The warper transforms every pixel exactly (GDAL approximates to 1/8 pixel by default, which moves a few
# nearest-neighbour picks near pixel edges): a tile pixel is the batch raster's pixel under its centre.
EXACT = {"tolerance": 1e-9}  # 0 makes rasterio fail (hDS is NULL)
MARGIN = 2  # scene pixels read around a footprint, so that every sampled pixel is inside the mosaic


@dataclass(frozen=True)
class Footprint:
    """The scene pixels under one tile: a window (clipped to the scene) and scene pixels per tile pixel."""

    window: Window
    step: float


def footprint(crs, transform: Affine, width: int, height: int, z: int, x: int, y: int) -> Footprint | None:
    """The window of scene pixels a tile covers, or None when it misses the scene."""
    left, bottom, right, top = transform_bounds("EPSG:3857", crs, *TMS.xy_bounds(x, y, z), densify_pts=21)
    inverse = ~transform
    cols, rows = zip(*(inverse * (px, py) for px in (left, right) for py in (bottom, top)), strict=True)
    c0, c1 = max(0, math.floor(min(cols)) - MARGIN), min(width, math.ceil(max(cols)) + MARGIN)
    r0, r1 = max(0, math.floor(min(rows)) - MARGIN), min(height, math.ceil(max(rows)) + MARGIN)
    if c0 >= c1 or r0 >= r1:
        return None
    step = max(max(cols) - min(cols), max(rows) - min(rows)) / TILE
    return Footprint(Window(c0, r0, c1 - c0, r1 - r0), step)


def native_zoom(crs, transform: Affine, width: int, height: int) -> int:
    """The zoom whose tile pixels are about the scene's pixels (at the scene's centre)."""
    for z in range(MAX_ZOOM + 1):
        centre = transform * (width / 2, height / 2)
        lon, lat = _to_lonlat(crs, *centre)
        tile = TMS.tile(lon, lat, z)
        found = footprint(crs, transform, width, height, z, tile.x, tile.y)
        if found is not None and found.step <= 1.0:
            return z
    return MAX_ZOOM


def lonlat_bounds(crs, transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    left, top = transform * (0, 0)
    right, bottom = transform * (width, height)
    return transform_bounds(
        crs, "EPSG:4326", min(left, right), min(top, bottom), max(left, right), max(top, bottom)
    )


def _to_lonlat(crs, x: float, y: float) -> tuple[float, float]:
    west, south, _, _ = transform_bounds(crs, "EPSG:4326", x, y, x, y)
    return west, south


def empty_tile() -> bytes:
    """A fully transparent 256² PNG."""
    from rio_tiler.models import ImageData

    return ImageData(np.ma.masked_all((1, TILE, TILE), dtype=np.uint8)).render(img_format="PNG")


def classes_tile(
    classes: np.ndarray, crs, transform: Affine, z: int, x: int, y: int, colormap: dict
) -> bytes:
    """Render a mosaic of classes (255: nothing) georeferenced by ``transform`` as tile z/x/y, warped by
    nearest neighbour, in the card's colours; pixels without a class are transparent."""
    profile = dict(
        driver="GTiff",
        width=classes.shape[1],
        height=classes.shape[0],
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=NODATA_CLASS,
    )
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(classes, 1)
        with memory.open() as dataset, Reader(None, dataset=dataset) as reader:
            return _nearest_tile(reader, z, x, y, colormap)


def classes_file_tile(path: str, z: int, x: int, y: int, colormap: dict) -> bytes:
    """A tile of a finished class raster (nearest neighbour; its no-data transparent)."""
    with Reader(path) as reader:
        return _nearest_tile(reader, z, x, y, colormap)


def _nearest_tile(reader: Reader, z: int, x: int, y: int, colormap: dict) -> bytes:
    """Band 1 of ``reader`` as tile z/x/y warped exactly by nearest neighbour, in ``colormap``'s colours."""
    try:
        image = reader.tile(
            x,
            y,
            z,
            tilesize=TILE,
            indexes=1,
            resampling_method="nearest",
            reproject_method="nearest",
            vrt_options=EXACT,
        )
    except TileOutsideBounds:
        return empty_tile()
    return image.render(img_format="PNG", colormap=colormap)


def image_tile(
    path: str, bands: list[int], value_range: tuple[float, float], z: int, x: int, y: int
) -> bytes:
    """The scene's ``bands`` as natural colour (``value_range`` stretched to 0..255), no-data transparent."""
    with Reader(path) as reader:
        try:
            image = reader.tile(
                x, y, z, tilesize=TILE, indexes=bands, reproject_method="nearest", vrt_options=EXACT
            )
        except TileOutsideBounds:
            return empty_tile()
    if image.data.dtype != np.uint8 or tuple(value_range) != (0.0, 255.0):
        image = image.rescale(in_range=[tuple(value_range)] * len(bands))
    return image.render(img_format="PNG")


def wmts_capabilities(
    base_url: str, layers: list[tuple[str, str, tuple[float, float, float, float]]], max_zoom: int
) -> str:
    """An OGC WMTS 1.0 capabilities document (RESTful) for ``layers`` (name, title, lon/lat bounds) in
    Web Mercator tiles 0..``max_zoom``, for GIS clients such as QGIS."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" version="1.0.0">',
        "<ows:ServiceIdentification><ows:Title>geoseg serve</ows:Title>"
        "<ows:ServiceType>OGC WMTS</ows:ServiceType><ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>"
        "</ows:ServiceIdentification>",
        "<Contents>",
    ]
    for name, title, (west, south, east, north) in layers:
        template = f"{base_url}/tiles/{name}/{{TileMatrix}}/{{TileCol}}/{{TileRow}}.png"
        out += [
            f"<Layer><ows:Title>{escape(title)}</ows:Title><ows:Identifier>{escape(name)}</ows:Identifier>",
            f"<ows:WGS84BoundingBox><ows:LowerCorner>{west} {south}</ows:LowerCorner>"
            f"<ows:UpperCorner>{east} {north}</ows:UpperCorner></ows:WGS84BoundingBox>",
            '<Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style>',
            "<Format>image/png</Format>",
            "<TileMatrixSetLink><TileMatrixSet>WebMercatorQuad</TileMatrixSet></TileMatrixSetLink>",
            f'<ResourceURL format="image/png" resourceType="tile" template={quoteattr(template)}/>',
            "</Layer>",
        ]
    out.append("<TileMatrixSet><ows:Identifier>WebMercatorQuad</ows:Identifier>")
    out.append("<ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857</ows:SupportedCRS>")
    for z in range(max_zoom + 1):
        matrix = TMS.matrix(z)
        x0, y0 = matrix.pointOfOrigin
        out.append(
            f"<TileMatrix><ows:Identifier>{z}</ows:Identifier>"
            f"<ScaleDenominator>{matrix.scaleDenominator!r}</ScaleDenominator>"
            f"<TopLeftCorner>{x0!r} {y0!r}</TopLeftCorner><TileWidth>{TILE}</TileWidth>"
            f"<TileHeight>{TILE}</TileHeight><MatrixWidth>{matrix.matrixWidth}</MatrixWidth>"
            f"<MatrixHeight>{matrix.matrixHeight}</MatrixHeight></TileMatrix>"
        )
    out += ["</TileMatrixSet>", "</Contents>", "</Capabilities>"]
    return "\n".join(out) + "\n"
