"""Class names and colours stored inside class rasters, so QGIS and ``geoseg vectorize`` can read them.

The colour table lives in the GeoTIFF itself; the class names are stored as a dataset tag holding a JSON
list (index -> name) so any GDAL-based tool can read them back without a side-car file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from geoseg.errors import InputError
from geoseg.model.card import ClassInfo
from geoseg.raster.reading import read_valid_mask

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


def read_classes(dataset) -> list[ClassInfo] | None:
    """The classes (names and colours) of a class raster that names them, as geoseg predict writes them;
    None for one without names or colour table (styles need both)."""
    names = read_class_names(dataset)
    try:
        table = dataset.colormap(1) if names else None
    except ValueError:  # no colour table
        table = None
    if not table:
        return None
    return [ClassInfo(name, tuple(int(c) for c in table[i][:3])) for i, name in enumerate(names)]


def check_card_matches(card, dataset, path: str, command: str) -> None:
    """A class raster that names its own classes (geoseg predict's do) is read with those: ``--preset``/
    ``--card`` naming other classes would put wrong names and colours on its pixels (LoveDA's water drawn or
    scored as Potsdam's tree), so it is refused; a raster without names takes the card's. ``card``: a
    :class:`~geoseg.model.card.ModelCard` or None."""
    own = read_class_names(dataset)
    if card is None or not own or own == card.class_names:
        return

    def listed(names: list[str]) -> str:
        return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")

    raise InputError(
        f"{path}: its {len(own)} classes ({listed(own)}) are not the {len(card.class_names)} of "
        f"the card ({listed(card.class_names)}); "
        f"drop preset=NAME or card=FILE to {command} it with its own classes"
    )


def check_class_raster(dataset, path: str, command: str, hint: str = "") -> None:
    """Refuse, in one line naming ``command``, what is not a class raster: one band of integer class
    indices stored as they are. An alpha band after it is its mask (``gdal_translate -b 1 -b mask`` writes
    one), which every reader applies through GDAL's mask of band 1. ``hint`` ends the message about bands."""
    from rasterio.enums import ColorInterp

    with_alpha = dataset.count == 2 and dataset.colorinterp[1] == ColorInterp.alpha
    if dataset.count != 1 and not with_alpha:
        raise InputError(
            f"{path}: has {dataset.count} bands; {command} needs a single-band class raster "
            f"(such as the output of geoseg predict){hint}"
        )
    dtype = np.dtype(dataset.dtypes[0])
    if dtype.kind not in "iu":
        raise InputError(
            f"{path}: holds {dtype.name} values; {command} needs an integer class raster "
            "(such as the output of geoseg predict)"
        )
    check_stored_as_is(dataset, [1], path)


def check_stored_as_is(dataset, indexes: Sequence[int], path: str) -> None:
    """Refuse class indices (a class or label raster) that carry a band scale or offset: GDAL and QGIS show
    stored × scale + offset, while class ids are read as stored, so the two would name other classes."""
    for index in indexes:
        scale, offset = dataset.scales[index - 1], dataset.offsets[index - 1]
        if (scale, offset) != (1, 0):
            raise InputError(
                f"{path}: band {index} has scale {scale:g} and offset {offset:g}, but class indices are read "
                f"as stored; remove them (gdal_edit.py -scale 1 -offset 0 {path}) or apply them first "
                "(gdal_translate -unscale)"
            )


def mapped_mask(dataset, values: np.ndarray, window) -> np.ndarray:
    """Where a window of a class raster holds a class: not :data:`NODATA_CLASS`, not the raster's nodata
    value, not masked by an internal mask or alpha band of another tool."""
    valid = read_valid_mask(dataset, window)
    mapped = np.ones(values.shape, bool) if valid is None else valid.copy()
    mapped &= values != NODATA_CLASS
    nodata = dataset.nodata
    if nodata is not None and not np.isnan(nodata) and float(nodata).is_integer():
        mapped &= values != int(nodata)
    return mapped
