"""Reading imagery the way a model expects it: chosen bands, a value range, and GDAL's validity mask.

Shared by inference and training, so both see the same bands, scaling and valid pixels. Nothing here
holds a scene in memory: everything reads windows (or a bounded sample of them).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geoseg.errors import GeosegWarning, InputError, one_line

Scale = tuple[float, float] | Literal["auto"] | None

EIGHT_BIT_RANGE = (0.0, 255.0)

# Band names as people write them in cards and band descriptions -> one canonical name.
_BAND_ALIASES = {
    "r": "red",
    "g": "green",
    "b": "blue",
    "ir": "nir",
    "nir": "nir",
    "infrared": "nir",
    "near-infrared": "nir",
    "near infrared": "nir",
    "near_infrared": "nir",
    "nearinfrared": "nir",
    "re": "rededge",
    "red edge": "rededge",
    "red-edge": "rededge",
}
# A driver prefix of a subdataset name (two characters at least: "C:" is a Windows drive).
_GDAL_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")
# Colour interpretations that say nothing about what a band holds.
_UNNAMED_INTERPS = {ColorInterp.undefined, ColorInterp.gray, ColorInterp.palette, ColorInterp.alpha}


def is_gdal_path(path: str | os.PathLike) -> bool:
    """GDAL virtual paths, URLs, subdataset names and inline VRTs (``/vsizip/...``, ``s3://...``,
    ``NETCDF:"a.nc":ndvi``, ``GPKG:a.gpkg:table``, ``<VRTDataset ...>``) that only GDAL can check; a local
    file of that name is a local file."""
    text = str(path)
    if text.startswith(("/vsi", "<VRTDataset")) or "://" in text:
        return True
    return _GDAL_PREFIX.match(text) is not None and not Path(text).exists()


def absolute_path(path: str | os.PathLike) -> str:
    """``path`` as any process reads it, whatever its current folder (a Dask worker's is its own): a local
    path made absolute against this process's folder, GDAL virtual paths and URLs as they are."""
    text = str(path)
    return text if is_gdal_path(text) else os.path.abspath(text)


def gdal_message(error: BaseException) -> str:
    """One line saying what GDAL reported: rasterio's "Read failed. See previous exception" hides the real
    reason (a truncated tile, a failed decompression) in the exception's cause."""
    cause = error.__cause__
    message = str(cause) if cause is not None and str(cause).strip() else str(error)
    return one_line(message) or type(error).__name__


def open_raster(
    path: str | os.PathLike, unreadable: str = "not a raster GDAL can read", *, require_bands: bool = True
) -> rasterio.DatasetReader:
    """Open a raster for reading, turning GDAL's failures into one-line :class:`InputError` messages
    (``unreadable`` says what the file is not); rasterio's own warning about a raster without georeferencing
    is silenced: the commands that care say so once, in their own words. A container without bands of its
    own (NetCDF, HDF, a GeoPackage of several rasters) is refused naming a subdataset to open instead,
    unless ``require_bands`` is false (``info`` lists them)."""
    text = str(path)
    if not is_gdal_path(text):
        if not Path(text).exists():
            raise InputError(f"{text}: file not found")
        if Path(text).is_dir():
            raise InputError(f"{text}: is a folder, expected a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(text)
    except RasterioError as error:
        message = one_line(error)
        raise InputError(f"{text}: {unreadable} ({message})") from error
    if dataset.count == 0 and require_bands:
        subdatasets = dataset.subdatasets
        dataset.close()
        if not subdatasets:
            raise InputError(f"{text}: holds no raster bands")
        raise InputError(
            f"{text}: holds no raster bands but {len(subdatasets)} subdataset(s); open one by its GDAL name, "
            f"e.g. {subdatasets[0]} (geoseg info {text} lists them)"
        )
    return dataset


def canonical_band_name(name: str) -> str:
    """Lower-case name with aliases folded (``NIR``, ``near-infrared`` -> ``nir``; ``R`` -> ``red``)."""
    key = " ".join(name.strip().lower().split())
    return _BAND_ALIASES.get(key, key)


def data_band_indexes(dataset) -> list[int]:
    """1-based indexes of the bands holding data (alpha bands excluded: they are masks)."""
    return [i for i, ci in zip(dataset.indexes, dataset.colorinterp, strict=True) if ci != ColorInterp.alpha]


def band_names(dataset) -> list[str | None]:
    """What each band holds, from its description or else its colour interpretation; None when unknown."""
    names: list[str | None] = []
    for description, interp in zip(dataset.descriptions, dataset.colorinterp, strict=True):
        if description and description.strip():
            names.append(canonical_band_name(description))
        elif interp not in _UNNAMED_INTERPS:
            names.append(canonical_band_name(interp.name))
        else:
            names.append(None)
    return names


def select_bands(
    dataset, expected: Sequence[str], bands: Sequence[int] | None = None, path: str | None = None
) -> list[int]:
    """The 1-based band indexes to feed a model expecting ``expected`` bands (names such as red,green,nir).

    ``bands`` (from ``--bands``) wins when given. Otherwise bands are matched by name (description or colour
    interpretation); rasters with exactly as many data bands as expected and no band descriptions use them in
    order (with a warning when their colour interpretation names other bands: false-colour composites are
    stored as photometric RGB). Anything else is an error asking for ``--bands``: band descriptions that
    contradict the model are not overridden, since a wrong guess gives plausible-looking nonsense.
    """
    path = path or dataset.name
    wanted = [canonical_band_name(b) for b in expected]
    listing = ",".join(expected)
    if bands is not None:
        bands = [int(b) for b in bands]
        if len(bands) != len(wanted):
            raise InputError(
                f"{path}: bands={bands} lists {len(bands)} band(s) but the model expects {len(wanted)} "
                f"({listing})"
            )
        bad = [b for b in bands if not 1 <= b <= dataset.count]
        if bad:
            raise InputError(
                f"{path}: bands={bands}: {','.join(map(str, bad))} out of range; "
                f"the raster has bands 1..{dataset.count}"
            )
        check_imagery(dataset, bands, path)
        return bands

    data = data_band_indexes(dataset)
    check_imagery(dataset, data, path)
    names = band_names(dataset)
    by_name: dict[str, list[int]] = {}
    for index, name in zip(dataset.indexes, names, strict=True):
        if name is not None and index in data:
            by_name.setdefault(name, []).append(index)
    if all(len(by_name.get(w, [])) == 1 for w in wanted):
        return [by_name[w][0] for w in wanted]

    # with fewer bands than expected, repeat them (grey as R,G,B): never suggest bands that do not exist
    example = ",".join(str(data[i % len(data)]) for i in range(len(wanted))) if data else "1"
    described = any(
        d and d.strip() for i, d in zip(dataset.indexes, dataset.descriptions, strict=True) if i in data
    )
    if by_name and not described and len(data) == len(wanted):
        # A colour interpretation alone is weak evidence: false-colour composites (ISPRS Vaihingen's NIR,R,G)
        # are stored as photometric RGB, so the bands are used in order, with a warning.
        seen = ",".join(n or "?" for i, n in zip(dataset.indexes, names, strict=True) if i in data)
        warnings.warn(
            f"{path}: the bands are labelled {seen} (colour interpretation) and the model expects {listing}; "
            f"using bands {','.join(map(str, data))} in that order (choose others with bands=[...])",
            GeosegWarning,
            stacklevel=2,
        )
        return data
    if by_name:
        described = ",".join(n or "?" for i, n in zip(dataset.indexes, names, strict=True) if i in data)
        missing = [w for w in wanted if len(by_name.get(w, [])) != 1]
        raise InputError(
            f"{path}: the model expects bands {listing} but the raster's bands are {described} "
            f"(no single {'/'.join(missing)} band); choose them with bands=[{example}]"
        )
    if len(data) == len(wanted):
        return data
    raise InputError(
        f"{path}: the raster has {len(data)} data band(s) but the model expects {len(wanted)} ({listing}); "
        f"choose them with bands=[{example}]"
    )


def check_imagery(dataset, indexes: Sequence[int], path: str | None = None) -> None:
    """Refuse bands whose values are not intensities a network can take, saying how to convert them.

    Fed as grey levels, 1-bit values or palette indices give plausible-looking nonsense, and complex (SAR)
    values would lose their imaginary part, so none of them is ever used as it is, whatever ``--bands`` says.
    Pixels that GDAL cannot decode at all (a compression it lacks) are refused with GDAL's reason.
    """
    path = path or dataset.name
    for index in indexes:
        dtype = dataset.dtypes[index - 1]
        if dtype.startswith("complex"):
            raise InputError(
                f"{path}: band {index} holds complex values ({dtype}, e.g. SAR); geoseg segments real-valued "
                f"imagery: convert it to amplitude first, e.g. gdal_calc.py -A {path} --calc='abs(A)' "
                "--type=Float32 --outfile amplitude.tif"
            )
        if dataset.tags(index, ns="IMAGE_STRUCTURE").get("NBITS") == "1":
            raise InputError(
                f"{path}: band {index} holds 1-bit values (a binary mask, not imagery); "
                "geoseg segments 8-bit, 16-bit or floating-point imagery"
            )
        if dataset.colorinterp[index - 1] == ColorInterp.palette:
            table = dataset.colormap(index)
            expand = "rgba" if any(rgba[3] < 255 for rgba in table.values()) else "rgb"
            raise InputError(
                f"{path}: band {index} holds colour-table indices, not colours; expand the table to "
                f"{expand.upper()} first: gdal_translate -expand {expand} {path} expanded.tif "
                "(-of VRT makes a virtual copy)"
            )
    check_decodable(dataset, indexes, path)


def check_decodable(dataset, indexes: Sequence[int], path: str | None = None) -> None:
    """Read one block of each band ``indexes``: a compression GDAL lacks (OJPEG, NeXT...) or a broken file
    fails here with GDAL's reason, before any warning, output or work."""
    with read_failures(path or dataset.name):
        read_bands(dataset, Window(0, 0, 1, 1), indexes)


@contextlib.contextmanager
def read_failures(path: str | os.PathLike) -> Iterator[None]:
    """Inside, a GDAL read failure becomes one :class:`InputError` line naming the file and GDAL's reason,
    instead of rasterio's "Read failed. See previous exception for details"."""
    try:
        yield
    except RasterioError as error:
        raise InputError(f"{path}: read failed ({gdal_message(error)})") from error


@dataclass(frozen=True)
class Validity:
    """Which bands tell a raster's valid pixels: a pixel is valid where any of the GDAL mask bands of
    ``union`` is non-zero and none of the alpha bands ``alphas`` is 0 (see :func:`validity`)."""

    union: tuple[int, ...]
    alphas: tuple[int, ...]


def validity(dataset) -> Validity:
    """The rule :func:`dataset_mask` follows, as data, so that a raster read directly and the same raster as
    an asset of a STAC Item (whose VRT mask band :mod:`geoseg.stac.items` builds from it) mask the same
    pixels: GDAL's per-dataset mask (internal, ``.msk`` side-car or alpha) when there is one; band 4 of an
    RGBA whose nodata value shadows its alpha; else the union of the bands' masks (a pixel is invalid when
    every band is at nodata). Plus every alpha band GDAL leaves out (:func:`unmasked_alphas`)."""
    if MaskFlags.per_dataset in dataset.mask_flag_enums[0]:
        union: tuple[int, ...] = (1,)
    elif dataset.count == 4 and dataset.colorinterp[0] == ColorInterp.red:
        union = (4,)
    else:
        union = tuple(dataset.indexes)
    return Validity(union, tuple(unmasked_alphas(dataset)))


def dataset_mask(dataset, **kwargs) -> np.ndarray:
    """The dataset's validity mask (0 invalid, non-zero valid) by the :func:`validity` rule, read with
    ``dataset.read_masks(**kwargs)``, without rasterio's NodataShadowWarning for rasters with both a nodata
    value and an alpha band: it speaks of per-band masks and is wrong here (the mask follows the alpha
    band), so it would only mislead."""
    rule = validity(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NodataShadowWarning)
        mask = dataset.read_masks(rule.union[0], **kwargs)
        for index in rule.union[1:]:
            mask |= dataset.read_masks(index, **kwargs)
    for index in rule.alphas:
        mask[dataset.read(index, **kwargs) == 0] = 0
    return mask


def unmasked_alphas(dataset) -> list[int]:
    """Alpha bands that GDAL's mask ignores: GDAL takes an alpha band as the mask only as the last of 2 or 4
    bands, so the alpha of a BGRN+alpha file, or one stored first, would leave its transparent pixels
    looking like data; geoseg treats every alpha band as a mask."""
    alphas = [
        i for i, ci in zip(dataset.indexes, dataset.colorinterp, strict=True) if ci == ColorInterp.alpha
    ]
    data = data_band_indexes(dataset)
    if not alphas or (data and MaskFlags.alpha in dataset.mask_flag_enums[data[0] - 1]):
        return []
    return alphas


def has_mask(dataset) -> bool:
    """True when some pixels may be invalid (nodata value, internal mask or alpha band)."""
    return any(MaskFlags.all_valid not in flags for flags in dataset.mask_flag_enums) or bool(
        unmasked_alphas(dataset)
    )


def band_dtype(dataset, indexes: Sequence[int]) -> np.dtype:
    """The one dtype the bands ``indexes`` are read in: the smallest that holds them all, since a VRT may
    mix Byte and UInt16 bands (which rasterio refuses to read together) and one value range covers all;
    floating point when a band carries a scale or offset (:func:`band_scaling`)."""
    dtype = stored_dtype(dataset, indexes)
    return dtype if band_scaling(dataset, indexes) is None else np.result_type(dtype, np.float32)


def stored_dtype(dataset, indexes: Sequence[int]) -> np.dtype:
    """The smallest dtype that holds the stored values of the bands ``indexes`` (before any scale)."""
    return np.result_type(*(np.dtype(dataset.dtypes[i - 1]) for i in indexes))


def band_scaling(dataset, indexes: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """GDAL's per-band scale and offset of ``indexes`` (value = stored × scale + offset), or None when every
    band stores its values as they are.

    Reflectance is often stored as uint16 with scale 0.0001 (Sentinel-2, Landsat collection 2 with an offset
    too): geoseg reads the values the metadata defines, so ``--scale``, ``--scale auto`` and a card's value
    range all speak of them, never of the stored integers. A scale of 0 would erase the band: refused.
    """
    scales = np.array([dataset.scales[i - 1] for i in indexes], dtype=np.float64)
    offsets = np.array([dataset.offsets[i - 1] for i in indexes], dtype=np.float64)
    if (scales == 1).all() and (offsets == 0).all():
        return None
    if (scales == 0).any() or not np.isfinite(scales).all() or not np.isfinite(offsets).all():
        band = indexes[int(np.flatnonzero((scales == 0) | ~np.isfinite(scales) | ~np.isfinite(offsets))[0])]
        raise InputError(
            f"{dataset.name}: band {band} has scale {dataset.scales[band - 1]:g} and offset "
            f"{dataset.offsets[band - 1]:g}, which map its values to nothing usable; fix them with "
            f"gdal_edit.py -scale 1 -offset 0 {dataset.name}"
        )
    return scales, offsets


def read_values(
    dataset,
    indexes: Sequence[int],
    window: Window | None = None,
    shape: tuple[int, int] | None = None,
    resampling: Resampling = Resampling.nearest,
) -> np.ndarray:
    """``dataset.read`` of ``indexes`` (C, h, w) in their :func:`band_dtype`, optionally decimated to
    ``shape`` with ``resampling``, scale and offset applied (:func:`band_scaling`); rasterio refuses bands
    of different dtypes in one call, so those are read one by one."""
    indexes = list(indexes)
    options = {"window": window, "resampling": resampling}
    if len({dataset.dtypes[i - 1] for i in indexes}) == 1:
        data = dataset.read(indexes, out_shape=shape and (len(indexes), *shape), **options)
    else:
        dtype = stored_dtype(dataset, indexes)
        data = np.stack([dataset.read(i, out_shape=shape, out_dtype=dtype, **options) for i in indexes])
    scaling = band_scaling(dataset, indexes)
    if scaling is None:
        return data
    scales, offsets = scaling
    data = data.astype(band_dtype(dataset, indexes))
    data *= scales.astype(data.dtype)[:, None, None]
    data += offsets.astype(data.dtype)[:, None, None]
    return data


def read_bands(dataset, window: Window, indexes: Sequence[int]) -> np.ndarray:
    """Bands ``indexes`` inside ``window`` as (C, h, w) in their :func:`band_dtype`; NaN and inf become 0."""
    data = read_values(dataset, indexes, window)
    if data.dtype.kind == "f":
        np.nan_to_num(data, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return data


def mirror_indexes(start: int, stop: int, size: int) -> np.ndarray:
    """The raster indexes that pixels ``start:stop`` of an axis ``size`` px long read, where the axis is
    mirrored about its first and last pixel (numpy's ``reflect``: the edge pixel is not repeated, so the
    mirror adds no doubled row; continued periodically when the range reaches beyond one mirror image)."""
    offsets = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(offsets)
    period = 2 * (size - 1)
    folded = np.mod(offsets, period)
    return np.where(folded < size, folded, period - folded)


def read_mirrored(
    dataset, row_off: int, col_off: int, height: int, width: int, indexes: Sequence[int]
) -> np.ndarray:
    """Bands ``indexes`` (C, height, width) of a window that may reach beyond the raster: pixels outside it
    are the raster mirrored about its own edges (:func:`mirror_indexes`). Only the raster's edge is a mirror:
    nodata inside it is read as stored. A window inside the raster is one plain read."""
    rows = mirror_indexes(row_off, row_off + height, dataset.height)
    cols = mirror_indexes(col_off, col_off + width, dataset.width)
    top, left = int(rows.min()), int(cols.min())
    window = Window(left, top, int(cols.max()) + 1 - left, int(rows.max()) + 1 - top)
    data = read_bands(dataset, window, indexes)
    inside = row_off >= 0 and col_off >= 0
    if inside and row_off + height <= dataset.height and col_off + width <= dataset.width:
        return data
    return data[:, (rows - top)[:, None], (cols - left)[None, :]]


def read_valid_mask(dataset, window: Window, indexes: Sequence[int] | None = None) -> np.ndarray | None:
    """Boolean (h, w) mask of valid pixels, or None when the whole window is valid.

    Follows GDAL: a pixel is invalid when *all* bands are at the nodata value, or the internal mask or alpha
    band is 0 (``dataset_mask``). For floating-point data, a pixel whose chosen ``indexes`` hold a NaN or
    infinity is invalid as well: its value is undefined, whatever the metadata says.
    """
    valid = None
    if has_mask(dataset):
        valid = dataset_mask(dataset, window=window) > 0
    if indexes is not None and stored_dtype(dataset, indexes).kind == "f":  # scaled integers stay finite
        finite = np.isfinite(read_values(dataset, indexes, window)).all(axis=0)
        valid = finite if valid is None else valid & finite
    if valid is not None and valid.all():
        return None
    return valid


def _sample_windows(dataset, per_side: int = 8, size: int = 256) -> list[Window]:
    """``per_side``² non-overlapping windows of ``size`` px spread evenly over a large raster."""
    windows = []
    h, w = min(size, dataset.height), min(size, dataset.width)
    for i in range(per_side):
        for j in range(per_side):
            row = i * (dataset.height - h) // max(1, per_side - 1)
            col = j * (dataset.width - w) // max(1, per_side - 1)
            windows.append(Window(col, row, w, h))
    return windows


def sample_values(dataset, indexes: Sequence[int], max_pixels: int = 2048 * 2048) -> np.ndarray:
    """A bounded sample of valid pixel values of ``indexes`` (all bands pooled), for percentile stretches.

    Small rasters are read whole; larger ones through an overview when they have one (GDAL picks it for a
    decimated read), else as a grid of windows, so the cost stays bounded for rasters of any size.
    """
    indexes = list(indexes)
    masked = has_mask(dataset)
    if dataset.width * dataset.height <= max_pixels or dataset.overviews(indexes[0]):
        factor = max(1.0, math.sqrt(dataset.width * dataset.height / max_pixels))
        shape = (max(1, round(dataset.height / factor)), max(1, round(dataset.width / factor)))
        parts = [
            (
                read_values(dataset, indexes, shape=shape),
                dataset_mask(dataset, out_shape=shape) > 0 if masked else None,
            )
        ]
    else:
        parts = []
        for window in _sample_windows(dataset):
            parts.append((read_values(dataset, indexes, window), read_valid_mask(dataset, window)))
    values = np.concatenate(
        [d[:, m] if m is not None else d.reshape(len(indexes), -1) for d, m in parts], axis=1
    )
    values = values.ravel()
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    return values


def percentile_range(
    dataset, indexes: Sequence[int], low: float = 2.0, high: float = 98.0
) -> tuple[float, float]:
    """The ``low``..``high`` percentile range of the valid values of ``indexes`` (one range for all bands,
    so colour balance is kept), estimated from a bounded sample."""
    return stretch_range(sample_values(dataset, indexes), dataset.name, low, high)


def stretch_range(
    values: np.ndarray, source: str, low: float = 2.0, high: float = 98.0
) -> tuple[float, float]:
    """The ``low``..``high`` percentile range of sampled ``values`` (of one image, or pooled from a training
    set's images), refusing what no stretch can map: no values, or a constant image."""
    if values.size == 0:
        raise InputError(f"{source}: no valid pixels to estimate scale='auto' from")
    lo, hi = np.percentile(values, [low, high]).tolist()
    if not hi > lo:
        raise InputError(
            f"{source}: scale='auto' found a constant image (value {lo:g}); pass scale=(MIN, MAX) instead"
        )
    return float(lo), float(hi)


def resolve_value_range(
    dataset,
    indexes: Sequence[int],
    scale: Scale,
    model_range: tuple[float, float] = EIGHT_BIT_RANGE,
    path: str | None = None,
) -> tuple[float, float]:
    """The value range mapped onto [0, 1] before normalisation, in the values :func:`read_values` returns
    (a band's scale and offset applied).

    An explicit ``scale`` wins; ``"auto"`` is a 2-98 percentile stretch. Without a scale, 8-bit data uses the
    model's range, and so does any data when the model was trained on a non-8-bit range (its card says so);
    16-bit or float data fed to an 8-bit model is an error, since guessing would silently produce garbage.
    """
    path = path or dataset.name
    if scale == "auto":
        try:
            return percentile_range(dataset, indexes)
        except RasterioError as error:
            message = gdal_message(error)
            raise InputError(f"{path}: scale='auto' could not read the pixels ({message})") from error
    if scale is not None:
        lo, hi = float(scale[0]), float(scale[1])
        if not hi > lo:
            raise InputError(f"{path}: scale=({lo:g}, {hi:g}) needs MAX > MIN")
        return lo, hi
    dtype = band_dtype(dataset, indexes)
    bits = min(int(dataset.tags(i, ns="IMAGE_STRUCTURE").get("NBITS", 8)) for i in indexes)
    if dtype == np.uint8 and bits < 8 and tuple(model_range) == EIGHT_BIT_RANGE:
        top = 2**bits - 1  # GDAL's NBITS: a 4-bit band holds 0..15, which 0..255 would show nearly black
        raise InputError(
            f"{path}: {bits}-bit values 0..{top} but the model expects 8-bit values 0..255; "
            f"pass scale=(0, {top})"
        )
    if dtype == np.uint8 or tuple(model_range) != EIGHT_BIT_RANGE:
        return float(model_range[0]), float(model_range[1])
    if band_scaling(dataset, indexes) is not None:
        stored = stored_dtype(dataset, indexes)
        scale, offset = dataset.scales[indexes[0] - 1], dataset.offsets[indexes[0] - 1]
        raise InputError(
            f"{path}: {stored.name} data with scale {scale:g} and offset {offset:g} (read as stored × scale "
            f"+ offset) but the model expects 8-bit values 0..255; pass scale=(MIN, MAX) in those units "
            f"(e.g. scale=(0, 0.3) for reflectance) or scale='auto' (2-98 percentile stretch)"
        )
    raise InputError(
        f"{path}: {dtype.name} data but the model expects 8-bit values 0..255; pass scale=(MIN, MAX) "
        f"(raw values mapped to 0..255, e.g. scale=(0, 4000)) or scale='auto' (2-98 percentile stretch)"
    )
