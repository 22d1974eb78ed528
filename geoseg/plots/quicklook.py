"""Quick-looks: a class raster as a PNG in its own colours, with a legend and a scale bar.

The raster is read through its overviews (a decimated read with ``out_shape``: GDAL picks the overview, which
geoseg builds with mode resampling), so a 100,000² map costs about what a 1,000² one does. The map is copied
pixel for pixel into the PNG's top left (no resampling by matplotlib), nodata transparent; the legend and the
scale bar sit in a panel on its right, drawn by matplotlib.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from geoseg.errors import ConfigurationError, GeosegWarning, InputError
from geoseg.model.card import ModelCard
from geoseg.model.presets import resolve_card
from geoseg.plots.common import DPI, base_name, check_png_output, default_color, new_figure, save_rgba_png
from geoseg.raster.classes import check_card_matches, check_class_raster, read_class_names
from geoseg.raster.grids import check_same_grid
from geoseg.raster.reading import (
    data_band_indexes,
    dataset_mask,
    has_mask,
    open_raster,
    percentile_range,
    read_failures,
    read_values,
)

DEFAULT_MAX_SIZE = 1600
MIN_MAX_SIZE = 320  # below this the legend no longer fits legibly beside the map
SMALL_MAP = 512  # small rasters are enlarged (whole pixels) to about this size
OVERLAY_OPACITY = 0.55  # class colours over an image

# panel layout, in PNG pixels
_PAD = 14
_ROW = 22
_SWATCH = (20, 13)
_FONT = 10
_PANEL_MIN, _PANEL_MAX = 200, 320


@dataclass(frozen=True)
class LegendEntry:
    value: int
    name: str
    color: tuple[int, int, int]
    share: float  # of the valid pixels drawn


@dataclass(frozen=True)
class QuicklookResult:
    """What was drawn: the PNG's size, the map's size at its top left, the legend, the ground scale."""

    path: Path
    width: int
    height: int
    map_width: int
    map_height: int
    legend: list[LegendEntry]
    metres_per_pixel: float | None  # ground size of one map pixel in the PNG; None when not georeferenced


def quicklook(
    classes: str | os.PathLike,
    output: str | os.PathLike,
    *,
    over: str | os.PathLike | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    preset: str | None = None,
    card: ModelCard | str | os.PathLike | None = None,
    overwrite: bool = False,
    read_from: str | os.PathLike | None = None,
) -> QuicklookResult:
    """Draw the class raster ``classes`` into the PNG ``output`` (at most ``max_size`` px on each side).

    Colours and names come from ``card``/``preset`` when given, else from the raster (colour table and the
    names tag geoseg writes, as QGIS shows them), else a default palette and class numbers. ``over`` is an
    image on the same grid drawn under half-transparent class colours (first three bands, or one grey band;
    non-8-bit values stretched 2-98 percent). Memory and time depend on ``max_size``, not on the raster.
    ``read_from``: the file holding ``classes`` while it is not yet under that name (``predict`` draws from
    its staged class raster); the picture and messages still name ``classes``.
    """
    if max_size < MIN_MAX_SIZE:
        raise ConfigurationError(
            f"max_size={max_size} is too small for a legible legend; use {MIN_MAX_SIZE}+"
        )
    check_png_output(output, overwrite, inputs=[classes] + ([over] if over is not None else []))
    model_card = resolve_card(preset, card)
    with open_raster(classes if read_from is None else read_from) as dataset:
        _check_class_raster(dataset, str(classes), over is not None)
        check_card_matches(model_card, dataset, str(classes), "draw")
        names, colors = _names_and_colors(dataset, model_card)
        measure = _text_width_measure()
        panel = _panel_width(names, measure)
        shape = _map_shape(dataset.height, dataset.width, max_size - panel, max_size)
        with read_failures(classes):  # a cut or corrupt file: one line naming it
            values, valid = _read_classes(dataset, shape)
        metres = _metres_per_pixel(dataset)
        image = None
        if over is not None:
            image = _read_image(over, dataset, str(classes), shape)
        size = (dataset.width, dataset.height)
        transform = dataset.transform
    codes, keys = _codes(values)
    legend = _legend(np.bincount(codes[valid], minlength=len(keys)), keys, names, colors)
    rgba = _north_up(_colorize(codes, keys, valid, legend, image), transform)
    zoom = _zoom(shape, max_size - panel, max_size)
    if zoom > 1:
        rgba = np.repeat(np.repeat(rgba, zoom, axis=0), zoom, axis=1)
    map_h, map_w = rgba.shape[:2]
    ground = metres * size[0] / map_w if metres is not None else None
    rows = max(1, (max_size - _fixed_panel_height(ground)) // _ROW)
    height = min(max_size, max(map_h, _fixed_panel_height(ground) + _ROW * min(rows, len(legend))))
    figure = new_figure(map_w + panel, height)
    figure.patch.set_alpha(0.0)  # the space under a wide map stays transparent
    _draw_panel(figure, map_w, panel, height, base_name(classes), size, metres, legend, rows, ground, measure)
    figure.canvas.draw()
    # the map goes in as it is, pixel for pixel: matplotlib's image path would resample it in float64
    pixels = np.array(figure.canvas.buffer_rgba())
    pixels[:map_h, :map_w] = rgba
    path = save_rgba_png(pixels, output, title=f"{base_name(classes)} quick-look", overwrite=overwrite)
    return QuicklookResult(path, map_w + panel, height, map_w, map_h, legend, ground)


# --- reading --------------------------------------------------------------------------------------------


def _check_class_raster(dataset, name: str, with_image: bool) -> None:
    hint = "" if with_image else "; to draw classes over an image pass the image as over=IMAGE"
    check_class_raster(dataset, name, "quicklook", hint)


def _names_and_colors(dataset, card: ModelCard | None) -> tuple[list[str], dict[int, tuple[int, int, int]]]:
    """Class names (index order) and colours by class value: the card's, else the raster's own.

    A GeoTIFF colour table has no alpha (every entry reads back opaque), so it cannot say which entries are
    classes: the names say how many classes there are; other values appear in the legend only when found.
    """
    if card is not None:
        return card.class_names, {i: tuple(c.color) for i, c in enumerate(card.classes)}
    names = read_class_names(dataset) or []
    try:
        table = dataset.colormap(1)
    except ValueError:  # no colour table
        table = {}
    return names, {int(v): tuple(int(x) for x in c[:3]) for v, c in table.items()}


def _map_shape(height: int, width: int, max_width: int, max_height: int) -> tuple[int, int]:
    """(rows, cols) to read: the raster shrunk to fit, never enlarged (see :func:`_zoom`)."""
    factor = max(1.0, width / max_width, height / max_height)
    return max(1, math.floor(height / factor)), max(1, math.floor(width / factor))


def _zoom(shape: tuple[int, int], max_width: int, max_height: int) -> int:
    """Whole-pixel enlargement for small rasters, so a 64² tile is not a stamp beside its legend."""
    rows, cols = shape
    wanted = math.ceil(SMALL_MAP / max(rows, cols))
    return max(1, min(wanted, max_width // cols, max_height // rows))


def _read_classes(dataset, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Class values and validity at ``shape`` (nearest neighbour from the best overview: still classes).

    Without overviews GDAL reads every block for a much smaller picture: memory stays bounded, but the time
    grows with the raster, so a warning says how to add them.
    """
    if not dataset.overviews(1) and dataset.width * dataset.height > 16 * shape[0] * shape[1]:
        warnings.warn(
            f"{dataset.name}: no overviews, so the quick-look reads every pixel; add them once with "
            f"gdaladdo -r mode {dataset.name}",
            GeosegWarning,
            stacklevel=3,
        )
    values = dataset.read(1, out_shape=shape, resampling=Resampling.nearest)
    valid = np.ones(shape, dtype=bool)
    nodata = dataset.nodata
    if nodata is not None and not math.isnan(nodata):
        valid &= values != nodata
    if has_mask(dataset):
        valid &= dataset_mask(dataset, out_shape=shape, resampling=Resampling.nearest) > 0
    return values, valid


def _read_image(path: str | os.PathLike, classes, classes_name: str, shape: tuple[int, int]) -> np.ndarray:
    """The image under the classes as (rows, cols, 4) uint8, alpha 0 where it has no data."""
    with open_raster(path) as image:
        check_same_grid(classes, image, classes_name, str(path))
        bands = data_band_indexes(image)
        bands = bands[:3] if len(bands) >= 3 else bands[:1]
        with read_failures(path):  # bands of mixed dtypes are read in one common type
            data = read_values(image, bands, shape=shape, resampling=Resampling.bilinear)
            if data.dtype != np.uint8:
                try:
                    lo, hi = percentile_range(image, bands)
                    finite = np.nan_to_num(data.astype(np.float64), nan=lo, posinf=hi, neginf=lo)
                    stretched = (finite - lo) * (255.0 / (hi - lo))
                except InputError:  # no valid pixel, or one value everywhere: nothing to stretch, drawn grey
                    stretched = np.full(data.shape, 128.0)
                data = np.clip(stretched, 0, 255).astype(np.uint8)
            valid = np.ones(shape, dtype=bool)
            if has_mask(image):
                valid = dataset_mask(image, out_shape=shape, resampling=Resampling.nearest) > 0
    rgb = np.repeat(data, 3, axis=0) if len(bands) == 1 else data
    return np.dstack([*rgb, np.where(valid, 255, 0).astype(np.uint8)])


def _metres_per_pixel(dataset) -> float | None:
    """Ground size of one raster pixel along a row, in metres; None without a CRS or with unknown units."""
    crs, transform = dataset.crs, dataset.transform
    if crs is None or transform == rasterio.Affine.identity():
        return None
    step = math.hypot(transform.a, transform.d)
    if crs.is_geographic:
        import pyproj

        geod = pyproj.CRS.from_wkt(crs.to_wkt()).get_geod()
        if geod is None:
            return None
        lon, lat = transform @ (dataset.width / 2, dataset.height / 2)
        lon2, lat2 = transform @ (dataset.width / 2 + 1, dataset.height / 2)
        return float(geod.inv(lon, lat, lon2, lat2)[2])
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # LOCAL_CS and other CRSs whose units rasterio cannot name
        return None
    return step * factor if factor else None


# --- drawing --------------------------------------------------------------------------------------------


def _north_up(rgba: np.ndarray, transform) -> np.ndarray:
    """The map with north at the top and east on the right: a south-up raster (positive pixel height, as
    some NetCDF and model grids are stored) would otherwise be drawn upside down. Rotated grids, and rasters
    without a geotransform (GDAL's identity stand-in, rows downwards), are drawn as stored."""
    if transform.is_identity or transform.b != 0 or transform.d != 0:
        return rgba
    if transform.e > 0:
        rgba = rgba[::-1]
    if transform.a < 0:
        rgba = rgba[:, ::-1]
    return rgba


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as small indices into ``keys`` (an offset for the usual narrow range, else ``np.unique``),
    so counting and colouring are one ``bincount`` and one table look-up instead of sorts."""
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 1 << 16:
        return values.astype(np.intp) - lo, np.arange(lo, hi + 1)
    keys, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(values.shape), keys


def _legend(
    counts: np.ndarray, keys: np.ndarray, names: list[str], colors: dict[int, tuple[int, int, int]]
) -> list[LegendEntry]:
    """Every named class, plus any other value found, with its colour and share of the valid pixels."""
    total = int(counts.sum())
    shares = {int(keys[i]): int(counts[i]) / total for i in np.flatnonzero(counts)}
    return [
        LegendEntry(
            value,
            names[value] if 0 <= value < len(names) else str(value),
            colors.get(value) or default_color(value),
            shares.get(value, 0.0),
        )
        for value in sorted(set(range(len(names))) | set(shares))
    ]


def _colorize(
    codes: np.ndarray,
    keys: np.ndarray,
    valid: np.ndarray,
    legend: list[LegendEntry],
    image: np.ndarray | None,
) -> np.ndarray:
    """RGBA pixels: class colours (over ``image`` when given), transparent where nothing is valid."""
    lookup = {e.value: e.color for e in legend}
    palette = np.array([lookup.get(int(v), (0, 0, 0)) for v in keys], dtype=np.uint8)
    rgb = palette[codes]
    rgba = np.zeros((*codes.shape, 4), dtype=np.uint8)
    if image is None:
        rgba[..., :3] = rgb
        rgba[..., 3] = np.where(valid, 255, 0)
        return rgba
    blend = (OVERLAY_OPACITY * rgb + (1 - OVERLAY_OPACITY) * image[..., :3]).round().astype(np.uint8)
    rgba[..., :3] = np.where(valid[..., None], blend, image[..., :3])
    rgba[..., 3] = np.where(valid, 255, image[..., 3])
    return rgba


_WIDEST_SHARES = ("100 %", "<0.1 %", "9.9 %", ">99.9 %", "99.9 %")
_NAME_GAP = 12  # between a class name and its share


def _text_width_measure() -> Callable[..., float]:
    """``measure(text, bold=False)``: its width in PNG pixels at the panel's font size, as Agg renders it."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer = RendererAgg(1, 1, DPI)
    fonts = {bold: FontProperties(size=_FONT, weight="bold" if bold else "normal") for bold in (False, True)}

    def measure(text: str, bold: bool = False) -> float:
        return renderer.get_text_width_height_descent(text, fonts[bold], ismath=False)[0]

    return measure


def _fit(text: str, room: float, measure: Callable[..., float], bold: bool = False) -> str:
    """``text`` shortened with an ellipsis until it is at most ``room`` pixels wide."""
    if measure(text, bold) <= room:
        return text
    while len(text) > 1 and measure(text + "…", bold) > room:
        text = text[:-1]
    return text.rstrip() + "…"


def _name_room(panel: int, measure: Callable[..., float]) -> float:
    """Pixels left for a class name in a legend row: the panel less margins, swatch and share column."""
    shares = max(measure(t) for t in _WIDEST_SHARES)
    return panel - 2 * _PAD - _SWATCH[0] - 8 - _NAME_GAP - shares


def _panel_width(names: list[str], measure: Callable[..., float]) -> int:
    """Wide enough for the longest name and its share, within limits (longer names are shortened)."""
    longest = max((measure(n) for n in names), default=0.0)
    needed = math.ceil(longest + _PANEL_MIN - _name_room(_PANEL_MIN, measure))
    return min(_PANEL_MAX, max(_PANEL_MIN, needed))


def _fixed_panel_height(ground: float | None) -> int:
    """Title, size line and (when georeferenced) the scale bar: everything but the legend rows."""
    return 2 * _PAD + 58 + (56 if ground is not None else 0)


def _share_text(share: float) -> str:
    if share == 0:
        return "–"
    if share < 0.001:
        return "<0.1 %"
    if share > 0.999 and share < 1:
        return ">99.9 %"  # a class that is not the whole map never reads 100 %
    if share >= 0.995 and share < 1:
        return f"{100 * share:.1f} %"
    return f"{100 * share:.1f} %" if share < 0.1 else f"{100 * share:.0f} %"


def _draw_panel(
    figure,
    left: int,
    width: int,
    height: int,
    title: str,
    size: tuple[int, int],
    resolution: float | None,
    legend: list[LegendEntry],
    rows: int,
    ground: float | None,
    measure: Callable[..., float],
) -> None:
    """Title, raster size, one legend row per class (swatch, name, share), scale bar; pixel coordinates."""
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import IdentityTransform

    pixels = IdentityTransform()  # origin bottom left, one unit = one PNG pixel (the figure's DPI is kept)

    def text(x: float, y: float, value: str, **style) -> None:
        figure.text(x, y, value, transform=pixels, **{"fontsize": _FONT, "va": "top", **style})

    def box(x: float, y: float, w: float, h: float, **style) -> None:
        figure.patches.append(Rectangle((x, y), w, h, transform=pixels, figure=figure, **style))

    box(left, 0, width, height, facecolor="white", edgecolor="none")
    box(left, 0, 1, height, facecolor="#888888", edgecolor="none")  # separates a white class from the panel
    x, top = left + _PAD, height - _PAD
    text(x, top, _fit(title, width - 2 * _PAD, measure, bold=True), fontweight="bold")
    detail = f"{size[0]:,} × {size[1]:,} px" + (f" · {_distance_text(resolution)}" if resolution else "")
    text(x, top - 20, detail, color="#444444", fontsize=_FONT - 1)
    y = top - 50
    shown = legend if len(legend) <= rows else legend[: rows - 1]
    room = _name_room(width, measure)
    for entry in shown:
        box(x, y - _SWATCH[1], *_SWATCH, facecolor=np.array(entry.color) / 255, edgecolor="#333333", lw=0.8)
        text(x + _SWATCH[0] + 8, y + 1, _fit(entry.name, room, measure))
        text(left + width - _PAD, y + 1, _share_text(entry.share), ha="right", color="#444444")
        y -= _ROW
    if len(shown) < len(legend):
        text(x, y + 1, f"+ {len(legend) - len(shown)} more classes", color="#444444")
    if ground is not None:
        _scale_bar(figure, x, _PAD + 6, width - 2 * _PAD, ground, text, box)


def _nice_length(limit_m: float) -> float:
    """The largest 1, 2 or 5 × 10^k metres not above ``limit_m``."""
    exponent = math.floor(math.log10(limit_m))
    for mantissa in (5, 2, 1):
        if mantissa * 10**exponent <= limit_m:
            return mantissa * 10.0**exponent
    return 10.0**exponent


def _distance_text(metres: float) -> str:
    if metres >= 1000:
        return f"{metres / 1000:.3g} km"
    return f"{metres:.3g} m" if metres >= 1 else f"{metres * 100:.3g} cm"


def _scale_bar(figure, x: float, y: float, max_px: float, ground: float, text, box) -> None:
    """A bar of a round number of metres in two black/white halves, its length written above it."""
    metres = _nice_length(max_px * ground)
    length = metres / ground
    half = length / 2
    box(x, y, half, 6, facecolor="black", edgecolor="black", lw=0.8)
    box(x + half, y, half, 6, facecolor="white", edgecolor="black", lw=0.8)
    text(x, y + 26, f"0 … {_distance_text(metres)}")
