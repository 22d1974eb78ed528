"""What ``geoseg info`` reports: a checkpoint's card and shape, or a raster's grid, bands and masks."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any

from geoseg.errors import CheckpointError, InputError
from geoseg.model.sniff import sniff_checkpoint


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready description of a checkpoint or a raster, decided by the file's content."""
    from geoseg.raster.reading import is_gdal_path

    text = str(path)
    local = Path(text)
    if not is_gdal_path(text) and not local.exists():
        raise InputError(f"{text}: file not found")
    if not is_gdal_path(text) and local.is_file() and local.suffix.lower() == ".onnx":
        from geoseg.export.metadata import describe_onnx  # an export (geoseg export), read without torch

        return describe_onnx(local)
    if not is_gdal_path(text) and local.is_file():
        try:
            sniff_checkpoint(local)
        except CheckpointError as error:
            if "not a checkpoint" not in str(error):
                raise
        else:
            from geoseg.model.checkpoint import checkpoint_summary  # imports torch: only for checkpoints

            return checkpoint_summary(local)
    return describe_raster(text)


def describe_raster(path: str) -> dict[str, Any]:
    from rasterio.enums import MaskFlags

    from geoseg.raster.classes import read_class_names
    from geoseg.raster.reading import open_raster

    unreadable = "neither a checkpoint nor a raster GDAL can read"
    with open_raster(path, unreadable, require_bands=False) as dataset:
        crs = dataset.crs
        mask_kinds = []
        for flags in dataset.mask_flag_enums:
            names = [f.name for f in flags if f != MaskFlags.all_valid]
            mask_kinds.append("+".join(names) or "all_valid")
        return {
            "path": path,
            "format": dataset.driver,
            "width": dataset.width,
            "height": dataset.height,
            "count": dataset.count,
            "dtype": ",".join(sorted(set(dataset.dtypes))),
            "crs": _crs_text(crs),
            **_placement(dataset),
            "nodata": dataset.nodata,
            "area_or_point": dataset.tags().get("AREA_OR_POINT"),
            "masks": mask_kinds,
            "block_shape": [list(shape) for shape in sorted(set(dataset.block_shapes))],
            "overviews": dataset.overviews(1) if dataset.count else [],
            "compression": compression_name(dataset),
            "class_names": read_class_names(dataset),
            # scale and offset: geoseg reads stored × scale + offset (see geoseg.raster.reading.band_scaling)
            "bands": [
                {
                    "index": i,
                    "colorinterp": dataset.colorinterp[i - 1].name,
                    "description": dataset.descriptions[i - 1],
                    "dtype": dataset.dtypes[i - 1],
                    "scale": dataset.scales[i - 1],
                    "offset": dataset.offsets[i - 1],
                }
                for i in dataset.indexes
            ],
            **({"subdatasets": dataset.subdatasets} if dataset.subdatasets else {}),
        }


def _crs_text(crs) -> str | None:
    return (crs.to_string() if crs.to_epsg() else crs.to_wkt()) if crs else None


def _placement(dataset) -> dict[str, Any]:
    """How the raster lies on the ground: a transform (with pixel size and bounds), GCPs or RPCs, or
    nothing. Bounds and pixel size are left out unless a transform places the raster: from GDAL's identity
    stand-in they would present pixel numbers as coordinates."""
    from geoseg.raster.grids import placement

    kind = placement(dataset)
    described: dict[str, Any] = {"georeferencing": kind or "none (pixel coordinates)"}
    if kind in ("transform", None):
        described.update(
            transform=list(dataset.transform)[:6], pixel_size=list(dataset.res), bounds=list(dataset.bounds)
        )
    else:
        described.update(transform=None, pixel_size=None, bounds=None)
    points, gcp_crs = dataset.gcps
    if points:
        described["gcps"] = {"count": len(points), "crs": _crs_text(gcp_crs)}
    rpcs = dataset.rpcs
    if rpcs is not None:  # the centre and half-extent the RPC model is fitted to
        described["rpcs"] = {
            "lat_off": rpcs.lat_off,
            "long_off": rpcs.long_off,
            "height_off": rpcs.height_off,
            "lat_scale": rpcs.lat_scale,
            "long_scale": rpcs.long_scale,
        }
    return described


def compression_name(dataset) -> str | None:
    """GDAL's name of the compression: rasterio's enum knows only the common ones and gives others (OJPEG,
    SGILOG, THUNDERSCAN, NEXT...) as a plain string, or None where only the metadata names them."""
    known = dataset.compression
    if isinstance(known, Enum):
        return known.value
    return known or dataset.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") or None
