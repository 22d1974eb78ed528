"""Ground-truth label rasters as class indices: one decoding shared by ``evaluate`` and ``train``.

Label rasters come in two forms: class indices (one band) and colours (three bands, as the ISPRS benchmarks
distribute them). Index rasters often reserve low values for "unlabelled" (ISPRS index crops: 0 = ignore and
1..6 = the six classes; LoveDA: 0 = no-data and 1..7 = the seven classes); ``offset`` handles that: stored
values below ``offset`` are ignored and the others have ``offset`` subtracted. ``ignore_index`` is then a
class-index value (after the offset) that is ignored, as in the model card. The raster's nodata value is
ignored too.

Colour rasters map each pixel's (r, g, b) to the class with that colour. Black (0, 0, 0), when it is not a
class colour, is ignored: it marks the eroded boundaries of the ISPRS "noBoundary" ground truth. Any other
colour that is not a class colour is an error naming the colour, never silently dropped, because it usually
means the wrong preset. A fourth band is read as alpha (0 = ignored), and so is any band whose colour
interpretation is alpha, wherever it stands.

Decoded labels are uint8 with :data:`IGNORE` (255) for ignored pixels (a class raster holds at most 255
classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.errors import InputError, check_whole_number
from geoseg.labels import IGNORE, MAX_CLASSES
from geoseg.raster.classes import check_stored_as_is
from geoseg.raster.reading import data_band_indexes, read_failures, read_valid_mask

_BLACK = (0, 0, 0)


@dataclass(frozen=True)
class LabelEncoding:
    """How the stored values of a label raster become class indices."""

    num_classes: int | None = None  # None: any index 0..254 is accepted
    colors: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int | None = None
    offset: int = 0
    nodata: float | None = None

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise InputError(f"label_offset={self.offset}: give 0 or more")
        check_ignore_index(self.ignore_index)
        if self.num_classes is not None and not 1 <= self.num_classes <= MAX_CLASSES:
            raise InputError(f"number of classes must be 1..{MAX_CLASSES}, got {self.num_classes}")

    @property
    def limit(self) -> int:
        return self.num_classes if self.num_classes is not None else MAX_CLASSES


def check_ignore_index(ignore_index: int | None) -> None:
    """Refuse an ignore index no label can hold: labels decode to uint8 class indices, so 0..255 (255 is
    :data:`IGNORE` itself, UAVid's); one check for training and evaluation, from Python or the CLI."""
    check_whole_number("ignore_index", ignore_index, 0, IGNORE, f"give a label index 0..{IGNORE}")


def decode_labels(
    data: np.ndarray, encoding: LabelEncoding, source: str, valid: np.ndarray | None = None
) -> np.ndarray:
    """``(bands, h, w)`` stored label values → ``(h, w)`` uint8 class indices with IGNORE for ignored pixels.

    ``source`` names the raster in error messages. Pixels where ``valid`` (h, w) is False are IGNORE and
    never checked: under a mask or a transparent alpha a label raster may store anything.
    """
    if data.ndim != 3:
        raise ValueError(f"expected (bands, height, width), got shape {data.shape}")
    bands = data.shape[0]
    valid = np.ones(data.shape[1:], dtype=bool) if valid is None else valid
    if bands == 1:
        return _decode_indices(data[0], encoding, source, valid)
    if bands in (3, 4):
        return _decode_colors(data, encoding, source, valid)
    raise InputError(
        f"{source}: a label raster has 1 band (class indices) or 3 bands (colours, 4 with alpha), not {bands}"
    )


def _decode_indices(
    values: np.ndarray, encoding: LabelEncoding, source: str, valid: np.ndarray
) -> np.ndarray:
    ignored = ~valid
    if np.issubdtype(values.dtype, np.floating):
        ignored |= np.isnan(values)
        if not np.all(ignored | (values == np.round(values))):
            raise InputError(f"{source}: label values must be whole numbers (class indices), got fractions")
        values = np.where(ignored, 0, values)
    elif not np.issubdtype(values.dtype, np.integer):
        raise InputError(f"{source}: label values must be integers (class indices), got {values.dtype}")
    values = values.astype(np.int64, copy=False)
    if encoding.nodata is not None and not np.isnan(encoding.nodata):
        ignored |= values == int(encoding.nodata)
    if encoding.offset:
        ignored |= values < encoding.offset
        values = values - encoding.offset
    if encoding.ignore_index is not None:
        ignored |= values == encoding.ignore_index
    bad = ~ignored & ((values < 0) | (values >= encoding.limit))
    if bad.any():
        stored = np.unique(values[bad] + encoding.offset)
        listed = ", ".join(str(v) for v in stored[:5]) + (", …" if stored.size > 5 else "")
        where = f", less the label offset {encoding.offset}, fall" if encoding.offset else " lie"
        raise InputError(
            f"{source}: {int(bad.sum())} label pixels hold value(s) {listed} that{where} outside the "
            f"{encoding.limit} classes 0..{encoding.limit - 1}; pass label_offset=N when labels start at N "
            "(1 for ISPRS/LoveDA index labels, where 0 is unlabelled) or ignore_index=V"
        )
    out = values.astype(np.uint8)
    out[ignored] = IGNORE
    return out


def _decode_colors(data: np.ndarray, encoding: LabelEncoding, source: str, valid: np.ndarray) -> np.ndarray:
    if encoding.colors is None:
        raise InputError(
            f"{source}: is a colour label raster ({data.shape[0]} bands) but no class colours are known; "
            "pass preset=NAME or card=FILE"
        )
    if not np.issubdtype(data.dtype, np.integer) or data.dtype.itemsize > 2:
        raise InputError(f"{source}: colour labels must be 8-bit RGB, got {data.dtype}")
    rgb = data[:3].astype(np.int64)
    keys = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    palette = np.array([(r << 16) | (g << 8) | b for r, g, b in encoding.colors], dtype=np.int64)
    if np.unique(palette).size != palette.size:
        raise InputError(f"{source}: two classes share a colour, so colour labels are ambiguous")
    order = np.argsort(palette)
    sorted_palette = palette[order]
    position = np.clip(np.searchsorted(sorted_palette, keys), 0, sorted_palette.size - 1)
    matched = sorted_palette[position] == keys
    classes = order[position]
    ignored = ~matched | ~valid
    black_is_class = _BLACK in [tuple(c) for c in encoding.colors]
    unknown = (~matched if black_is_class else ~matched & (keys != 0)) & valid
    if data.shape[0] == 4:
        transparent = data[3] == 0
        ignored |= transparent
        unknown &= ~transparent
    if unknown.any():
        found, counts = np.unique(keys[unknown], return_counts=True)
        first = int(found[np.argmax(counts)])
        colour = ((first >> 16) & 255, (first >> 8) & 255, first & 255)
        known = ", ".join(f"{c}" for c in encoding.colors)
        raise InputError(
            f"{source}: {int(unknown.sum())} label pixels have colours that are not class colours, "
            f"e.g. {colour} ({len(found)} unknown colour(s)); class colours are {known}; "
            "check preset=NAME or card=FILE"
        )
    out = classes.astype(np.uint8)
    if encoding.ignore_index is not None:
        ignored |= classes == encoding.ignore_index
    out[ignored] = IGNORE
    return out


def palette_lookup(dataset, colors) -> np.ndarray | None:
    """``(3, n)`` stored value → colour for a one-band label raster whose colour table holds the class
    colours at other values than their class indices (a palette PNG or TIFF in its own order), so that its
    pixels decode by colour, as any GIS shows them; None where the values are to be read as indices (no
    table, or one that agrees with the class order, as geoseg's own class rasters)."""
    if colors is None or dataset.count != 1 or dataset.dtypes[0] not in ("uint8", "uint16"):
        return None
    try:
        table = dataset.colormap(1)
    except ValueError:
        return None
    classes = {tuple(int(v) for v in c[:3]): i for i, c in enumerate(colors)}
    entries = {int(value): tuple(int(v) for v in rgba[:3]) for value, rgba in table.items()}
    if not any(classes.get(rgb, value) != value for value, rgb in entries.items() if rgb != _BLACK):
        return None  # black entries are unused ones (or ISPRS boundaries): they decide nothing
    lookup = np.zeros((3, 256 if dataset.dtypes[0] == "uint8" else 65536), dtype=np.uint8)
    for value, rgb in entries.items():
        if 0 <= value < lookup.shape[1]:
            lookup[:, value] = rgb
    return lookup


def read_labels(dataset, window, encoding: LabelEncoding, source: str) -> np.ndarray:
    """A window of a label raster decoded (see :func:`decode_labels`), a palette raster by its colours;
    IGNORE where the raster's own internal mask or an alpha band marks pixels unlabelled. Alpha bands are
    masks wherever they stand, never label values (a grey+alpha index raster, an A,R,G,B colour raster),
    and the pixels they hide are not decoded: they may hold any value."""
    indexes = data_band_indexes(dataset) or list(dataset.indexes)
    check_stored_as_is(dataset, indexes, source)
    with read_failures(source):  # a cut or corrupt file: one line naming it
        data = dataset.read(indexes, window=window)
        labelled = read_valid_mask(dataset, window)
    lookup = palette_lookup(dataset, encoding.colors)
    if lookup is None:
        return decode_labels(data, encoding, source, labelled)
    nodata = encoding.nodata
    stored = data[0]
    labels = decode_labels(lookup[:, stored], encoding, source, labelled)
    if nodata is not None and not np.isnan(nodata):
        labels[stored == nodata] = IGNORE
    return labels
