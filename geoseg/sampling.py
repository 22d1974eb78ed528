"""Stratified random samples of a class map: drawn for a person to label, and read back as sample units.

``geoseg sample`` draws, for each class of the map (the strata), a fixed number of pixels at random among
the pixels mapped as that class, and writes their centres as points with the ``map_class`` and an empty
``reference`` column that a person fills in the GIS (QGIS: toggle editing, open the attribute table). Read
back by ``geoseg evaluate CLASSES.tif SAMPLE.gpkg --class-field reference``, the labelled units give the
stratified estimates of area and accuracy (:mod:`geoseg.area_estimation`).

The map is read twice, strip by strip (class counts per strip, then the drawn pixels), so memory does not
grow with the raster; the same seed draws the same points, whatever the strips.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.errors import ConfigurationError, GeosegWarning, InputError, OutputError, check_seed
from geoseg.labels.polygons import VectorLabelOptions, VectorTable, class_index, map_classes, reproject
from geoseg.raster.classes import check_class_raster, mapped_mask, read_class_names
from geoseg.raster.grids import block_windows, placement
from geoseg.raster.reading import open_raster, read_failures

DEFAULT_BLOCK = 1024


@dataclass(frozen=True)
class SampleResult:
    """What ``geoseg sample`` drew: units per class name, and the classes that had fewer pixels than asked."""

    path: str
    units: dict[str, int]
    short: dict[str, dict[str, int]]  # class → {"asked": units, "drawn": its pixels, all of them} where fewer

    def to_dict(self) -> dict:
        return {
            "output": self.path,
            "units": dict(self.units),
            "short": {k: dict(v) for k, v in self.short.items()},
        }


def parse_allocation(text: str | None) -> dict[str, int] | None:
    """``'water=100,building=50'`` → {"water": 100, "building": 50}."""
    if not text:
        return None
    allocation = {}
    for item in text.split(","):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ConfigurationError(
                f"allocation={text!r}: {item!r} is not CLASS=COUNT; write e.g. 'water=100,building=50'"
            )
        allocation[name.strip()] = int(count)
    return allocation


def draw_sample(
    classes: str | os.PathLike,
    output: str | os.PathLike,
    *,
    per_class: int = 50,
    allocation: Mapping[str, int] | None = None,
    seed: int | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    block_size: int = DEFAULT_BLOCK,
) -> SampleResult:
    """Draw a stratified random sample of ``classes`` (a class raster) into the points file ``output``.

    Every class on the map gets ``per_class`` units, or what ``allocation`` (class name or id → count)
    says; a class with fewer pixels gives all of them (counted in one warning). Points lie at pixel centres
    in the raster's CRS; nodata and masked pixels are never drawn. ``class_names`` default to the names the
    raster holds (``geoseg predict`` writes them), else the class ids.
    """
    import shapely
    from pyogrio.raw import write

    from geoseg.atomic import check_output_path
    from geoseg.vector.output import atomic_vector_output, creation_options, output_driver

    if per_class < 0:
        raise ConfigurationError(f"per_class={per_class}: give 0 or more units per class")
    for key, count in (allocation or {}).items():
        if count < 0:
            raise ConfigurationError(f"allocation={{{key!r}: {count!r}}}: give 0 or more units")
    if per_class == 0 and not any((allocation or {}).values()):  # 0 is for leaving out what allocation omits
        raise ConfigurationError(
            "per_class=0 with no count in an allocation draws an empty sample; give per_class=1 or more, "
            "or counts such as allocation={'water': 100}"
        )
    check_seed(seed)
    if output_driver(output) == "Parquet":
        raise OutputError(f"{output}: write the sample as .gpkg, .fgb, .geojson or .shp")
    check_output_path(output, overwrite, [classes])
    if not Path(classes).exists():
        raise InputError(f"{classes}: class raster not found")
    with open_raster(classes) as dataset:
        check_class_raster(dataset, str(classes), "sample")
        if dataset.crs is None or placement(dataset) != "transform":
            raise InputError(
                f"{classes}: has no CRS and geotransform, so sample points could not be placed in a GIS"
            )
        names = list(class_names or read_class_names(dataset) or [str(i) for i in range(255)])
        wanted = np.full(len(names), per_class, dtype=np.int64)
        asked = {
            class_index(key, names, f"allocation={{{key!r}: {count!r}}}"): count
            for key, count in (allocation or {}).items()
        }
        for c, count in asked.items():
            wanted[c] = count
        # strips of whole rows: a pixel's ordinal among its class is in row-major order, whatever the strips
        rows_per = max(1, block_size * block_size // dataset.width)
        windows = list(block_windows(dataset.height, dataset.width, rows_per, dataset.width))
        counts = np.zeros((len(windows), len(names)), dtype=np.int64)
        for b, (_, values, mapped) in enumerate(_read(dataset, windows)):
            values = values[mapped].astype(np.int64)
            if values.size and values.max() >= len(names):
                raise InputError(
                    f"{classes}: holds class {values.max()}, outside the {len(names)} classes "
                    f"{', '.join(names[:10])}{', …' if len(names) > 10 else ''}"
                )
            counts[b] = np.bincount(values, minlength=len(names))
        totals = counts.sum(axis=0)
        rng = np.random.default_rng(seed)
        # class → ordinals of the drawn pixels among its mapped pixels, counted block after block
        picks = {
            int(c): np.sort(rng.choice(totals[c], size=min(int(wanted[c]), int(totals[c])), replace=False))
            for c in np.flatnonzero(totals)
        }
        short = {
            names[c]: {"asked": int(wanted[c]), "drawn": int(totals[c])}
            for c in picks
            if wanted[c] > totals[c]
        }
        if short:
            listed = ", ".join(f"{name} ({n['drawn']} of {n['asked']})" for name, n in short.items())
            warnings.warn(
                f"{classes}: fewer pixels than units asked for in {listed}; every one of them is drawn",
                GeosegWarning,
                stacklevel=2,
            )
        absent = [names[c] for c, count in asked.items() if count and not totals[c]]
        if absent:
            warnings.warn(
                f"{classes}: no pixel is mapped as {', '.join(absent)}; no unit drawn there",
                GeosegWarning,
                stacklevel=2,
            )
        starts = np.vstack([np.zeros(len(names), np.int64), np.cumsum(counts, axis=0)])  # first ordinals
        rows, cols, drawn = [], [], []
        for b, (window, values, mapped) in enumerate(_read(dataset, windows, _holding(picks, starts))):
            for c, ordinals in picks.items():
                lo, hi = np.searchsorted(ordinals, [starts[b, c], starts[b + 1, c]])
                if lo == hi:
                    continue
                flat = np.flatnonzero(mapped & (values == c))[ordinals[lo:hi] - starts[b, c]]
                rows.append(flat // values.shape[1] + int(window.row_off))
                cols.append(flat % values.shape[1] + int(window.col_off))
                drawn.append(np.full(hi - lo, c))
        transform, crs = dataset.transform, dataset.crs
    rows, cols, drawn = (np.concatenate(a) if a else np.empty(0, np.int64) for a in (rows, cols, drawn))
    order = np.lexsort((cols, rows, drawn))
    rows, cols, drawn = rows[order], cols[order], drawn[order]
    x, y = transform * (cols + 0.5, rows + 0.5)
    label = np.array(names, dtype=object)
    with atomic_vector_output(output, overwrite) as tmp:
        write(
            tmp,
            shapely.to_wkb(shapely.points(np.asarray(x, float), np.asarray(y, float))),
            field_data=[
                label[drawn] if drawn.size else np.empty(0, object),
                np.full(drawn.size, None, object),
            ],
            fields=["map_class", "reference"],
            geometry_type="Point",
            crs=crs.to_wkt(),
            driver=output_driver(output),
            layer=Path(output).stem,
            dataset_options=creation_options(output_driver(output)),
        )
    units = {names[c]: int((drawn == c).sum()) for c in picks}
    return SampleResult(str(output), units, short)


def _holding(picks: Mapping[int, np.ndarray], starts: np.ndarray) -> np.ndarray:
    """Whether each block holds a drawn pixel (the others are not read again)."""
    blocks = np.zeros(len(starts) - 1, bool)
    for c, ordinals in picks.items():
        blocks[np.unique(np.searchsorted(starts[1:, c], ordinals, side="right"))] = True
    return blocks


def _read(dataset, windows, which: np.ndarray | None = None) -> Iterator:
    """(window, class values, mapped mask) of each window (or of those ``which`` marks)."""
    for b, window in enumerate(windows):
        if which is not None and not which[b]:
            yield window, np.zeros((0, 1), np.uint8), np.zeros((0, 1), bool)
            continue
        with read_failures(dataset.name):
            values = dataset.read(1, window=window)
        yield window, values, mapped_mask(dataset, values, window)


# --- reading a labelled sample back --------------------------------------------------------------------


@dataclass(frozen=True)
class SampleUnits:
    """Labelled sample units on a class raster's grid: the pixel of each and its reference class."""

    rows: np.ndarray
    cols: np.ndarray
    reference: np.ndarray  # class indices
    unlabelled: int  # units whose reference is still empty
    outside: int  # units outside the raster


def sample_units(
    table: VectorTable,
    options: VectorLabelOptions,
    names: Sequence[str],
    crs,
    transform,
    width: int,
    height: int,
) -> SampleUnits:
    """The points of ``table`` (read with the reference column ``options.class_field``) on a raster's grid:
    null or empty references are not labelled yet and are left out (counted), as are points off the raster;
    a reference that is no class is refused, listed with its count."""
    import shapely

    if options.aoi or options.priority or options.all_touched or options.background is not None:
        raise ConfigurationError(
            f"{table.source}: holds points (sample units); aoi, background, all_touched and priority "
            "apply to truth polygons"
        )
    if crs is None:
        raise InputError("the class raster has no CRS, so sample points cannot be placed on it")
    points = table.geometries
    text = np.array(["" if v is None or v != v else str(v).strip() for v in table.values], dtype=object)
    labelled = ~shapely.is_missing(points) & (text != "")
    points = reproject(points[labelled], table.crs, crs, table.source)
    reference = map_classes(table.values[labelled], names, options, table.source)
    col, row = ~transform * (shapely.get_x(points), shapely.get_y(points))
    col, row = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    return SampleUnits(
        row[inside], col[inside], reference[inside], int((~labelled).sum()), int((~inside).sum())
    )
