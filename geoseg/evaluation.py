"""Measuring a class raster against a ground-truth raster, block by block, in bounded memory.

The rasters must share a grid (:func:`geoseg.raster.grids.check_same_grid`). Ground truth may hold class
indices or colours (see :mod:`geoseg.labels.raster`). Pixels are left out where the prediction is nodata
(255 or the raster's nodata value) or the truth is ignored (ignore index, nodata, values below the label
offset, black in colour labels). The maths lives in :mod:`geoseg.metrics`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.area_estimation import Z95, StratifiedEstimates, stratified_estimates
from geoseg.atomic import atomic_output
from geoseg.errors import ConfigurationError, InputError
from geoseg.labels import IGNORE, MAX_CLASSES
from geoseg.labels.raster import LabelEncoding, check_ignore_index, read_labels
from geoseg.metrics import class_indices, confusion_matrix, scores_from_confusion
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.presets import resolve_card
from geoseg.raster.classes import check_card_matches, check_class_raster, mapped_mask, read_class_names
from geoseg.raster.grids import block_windows, check_same_grid
from geoseg.raster.reading import (
    check_decodable,
    is_gdal_path,
    open_raster,
    read_failures,
)

if TYPE_CHECKING:
    from geoseg.labels.polygons import VectorLabelOptions
    from geoseg.sampling import SampleUnits

ProgressCallback = Callable[[int, int], None]
DEFAULT_BLOCK = 1024


@dataclass(frozen=True)
class ClassResult:
    """Scores of one class; NaN where the ratio is undefined (no pixels on either side)."""

    index: int
    name: str
    precision: float
    recall: float
    f1: float
    iou: float
    pixels: int  # truth pixels of this class among the evaluated ones
    predicted_pixels: int
    excluded: bool  # left out of the means


@dataclass(frozen=True)
class EvaluationResult:
    """What ``geoseg evaluate`` reports; ``to_dict`` gives its JSON form (NaN becomes null)."""

    prediction: str
    truth: str
    class_names: list[str]
    confusion: np.ndarray
    overall_accuracy: float
    mean_f1: float
    mean_iou: float
    per_class: list[ClassResult]
    excluded_classes: list[str]
    pixels_evaluated: int
    pixels_ignored: int
    class_colors: list[tuple[int, int, int]] | None = None  # card's or prediction raster's, for plots
    area_confusion: np.ndarray | None = None  # the confusion matrix in m² on the ellipsoid
    mapped_area: np.ndarray | None = None  # m² of each class over the whole map (its valid pixels)
    area_unit: str = "m2"  # "m2", or "raster units²" for a raster without a CRS
    error_polygons: int | None = None  # polygons written to the errors (or changes) output, when asked for
    kind: str = "truth"  # "truth", "sample" (points: stratified estimates) or "changes" (two maps)
    estimates: StratifiedEstimates | None = None  # of a sample; rows map classes, as in the paper
    sample: dict[str, int] | None = None  # sample units used and left out (why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prediction": self.prediction,
            "truth": self.truth,
            "overall_accuracy": _finite(self.overall_accuracy),
            "mean_f1": _finite(self.mean_f1),
            "mean_iou": _finite(self.mean_iou),
            "excluded_classes": list(self.excluded_classes),
            "pixels_evaluated": self.pixels_evaluated,
            "pixels_ignored": self.pixels_ignored,
            "per_class": [
                {
                    "index": c.index,
                    "name": c.name,
                    "precision": _finite(c.precision),
                    "recall": _finite(c.recall),
                    "f1": _finite(c.f1),
                    "iou": _finite(c.iou),
                    "pixels": c.pixels,
                    "predicted_pixels": c.predicted_pixels,
                    "excluded": c.excluded,
                }
                for c in self.per_class
            ],
            "confusion": self.confusion.tolist(),
            **({"areas": self.areas()} if self.area_confusion is not None else {}),
            **({"error_polygons": self.error_polygons} if self.error_polygons is not None else {}),
            **(self._estimates() if self.estimates is not None else {}),
            **({"changes": self.changes()} if self.kind == "changes" else {}),
        }

    def _estimates(self) -> dict[str, Any]:
        """The stratified estimates of a sample (Olofsson et al. 2014): per class and overall."""
        e = self.estimates
        return {
            "overall_accuracy_se": _finite(e.overall_se),
            "overall_accuracy_ci95": _finite(Z95 * e.overall_se),
            "sample_units": dict(self.sample),
            "area_estimates": {
                name: {
                    "area_ha": _finite(e.area[i] / 1e4),
                    "area_ci95_ha": _finite(e.area_ci95[i] / 1e4),
                    "mapped_area_ha": _finite(self.mapped_area[i] / 1e4),
                    "users_accuracy": _finite(e.users_accuracy[i]),
                    "users_accuracy_ci95": _finite(Z95 * e.users_se[i]),
                    "producers_accuracy": _finite(e.producers_accuracy[i]),
                    "producers_accuracy_ci95": _finite(Z95 * e.producers_se[i]),
                    "units": int(self.confusion[:, i].sum()),  # labelled units of the stratum
                }
                for i, name in enumerate(self.class_names)
            },
        }

    def changes(self) -> dict[str, Any]:
        """Two maps compared: the from (older, rows) → to (newer, columns) matrix in hectares, and the
        changed and unchanged areas."""
        matrix = self.area_confusion
        scale = 1e4 if self.area_unit == "m2" else 1.0
        unit = "ha" if self.area_unit == "m2" else self.area_unit
        return {
            "unit": unit,
            "classes": list(self.class_names),
            "from_to": np.round(matrix / scale, 8).tolist(),
            "changed": round(float((matrix.sum() - np.trace(matrix)) / scale), 8),
            "unchanged": round(float(np.trace(matrix) / scale), 8),
            "pixels_changed": int(self.confusion.sum() - np.trace(self.confusion)),
        }

    def areas(self) -> dict[str, Any]:
        """The comparison as areas: confusion in m² and ha (rows truth), each class's mapped area (whole
        map) and reference area (compared pixels), and the area-weighted overall accuracy."""
        matrix = self.area_confusion
        hectares = self.area_unit == "m2"
        total = float(matrix.sum())
        return {
            "unit": self.area_unit,
            "confusion_m2" if hectares else "confusion": np.round(matrix, 4).tolist(),
            **({"confusion_ha": np.round(matrix / 1e4, 8).tolist()} if hectares else {}),
            "per_class": {
                name: {
                    "mapped": round(float(self.mapped_area[i]), 4),
                    "reference": round(float(matrix[i].sum()), 4),
                    "mapped_where_compared": round(float(matrix[:, i].sum()), 4),
                }
                for i, name in enumerate(self.class_names)
            },
            "area_weighted_overall_accuracy": float(np.trace(matrix) / total) if total else None,
        }


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def evaluate(
    prediction: str | os.PathLike,
    truth: str | os.PathLike,
    *,
    card: ModelCard | str | os.PathLike | None = None,
    preset: str | None = None,
    ignore_index: int | None = None,
    label_offset: int = 0,
    exclude_classes: Iterable[str] = (),
    block_size: int = DEFAULT_BLOCK,
    progress: ProgressCallback | None = None,
    label_polygons: VectorLabelOptions | None = None,
    errors: str | os.PathLike | None = None,
    changes: str | os.PathLike | None = None,
    overwrite: bool = False,
    styles: bool = True,
) -> EvaluationResult:
    """Overall accuracy, per-class precision/recall/F1/IoU, mean F1 and mIoU of a class raster against truth.

    Class names and colours come from ``card``/``preset``, else from the prediction raster (names tag and
    colour table written by ``geoseg predict``), else classes are numbered. ``ignore_index`` defaults to
    the card's. ``exclude_classes`` (names or indices) are left out of the means but not of the overall
    accuracy, the paper's convention. Memory depends on ``block_size``, not on the raster size.
    ``label_polygons`` reads ``truth`` as label polygons, rasterized on the prediction's grid by the rules
    training uses (:mod:`geoseg.labels.polygons`), so a validation score and this one agree; a truth of
    *points* is a stratified sample (:mod:`geoseg.sampling`), scored by the estimators of
    :mod:`geoseg.area_estimation`. ``errors`` writes the wrongly classified pixels as polygons there
    (:mod:`geoseg.vector.review`). ``changes`` compares two maps instead: ``truth`` is the older class map
    on the same grid, the result's area matrix is from (old, rows) → to (new, columns), and the changed
    pixels are written there as polygons. With ``styles``, those polygons are styled for QGIS by the map's
    class (``predicted``, ``to``) in the class colours, when the classes have colours.
    """
    check_ignore_index(ignore_index)  # the truth polygons' and older map's paths build no LabelEncoding
    model_card = resolve_card(preset, card)
    if block_size <= 0:
        raise ConfigurationError(f"block size must be positive, got {block_size}")
    if changes is not None and (errors is not None or label_polygons is not None):
        raise ConfigurationError("changes compare two class rasters: give neither errors nor truth polygons")
    review = errors if errors is not None else changes
    if review is not None:
        from geoseg.vector.review import (
            ErrorRaster,
            check_errors_output,
            staging_folder,
            write_error_polygons,
        )
    with contextlib.ExitStack() as stack:
        pred_ds = stack.enter_context(_open(prediction, "prediction"))
        check_decodable(pred_ds, [1], str(prediction))
        if label_polygons is None:
            truth_ds = stack.enter_context(_open(truth, "truth" if changes is None else "older map"))
            check_decodable(truth_ds, list(truth_ds.indexes), str(truth))
            check_same_grid(pred_ds, truth_ds, str(prediction), str(truth))
        check_class_raster(pred_ds, str(prediction), "evaluate")
        check_card_matches(model_card, pred_ds, str(prediction), "score")
        names, colors = _class_names_and_colors(model_card, pred_ds)
        legend = None
        if review is not None:
            if styles and names and colors:
                legend = [
                    ClassInfo(n, tuple(int(v) for v in c[:3])) for n, c in zip(names, colors, strict=True)
                ]
            check_errors_output(review, overwrite, [prediction, truth], styled=legend is not None)
        if ignore_index is None and model_card is not None:
            ignore_index = model_card.ignore_index
        units = None
        if changes is not None:
            limit, read_truth = _older_map(truth_ds, names, truth)
        elif label_polygons is None:
            encoding = LabelEncoding(
                num_classes=len(names) if names else None,
                colors=tuple(tuple(int(v) for v in c) for c in colors) if colors else None,  # type: ignore[misc]
                ignore_index=ignore_index,
                offset=label_offset,
                nodata=truth_ds.nodata,
            )
            limit = encoding.limit

            def read_truth(window) -> np.ndarray:
                return read_labels(truth_ds, window, encoding, str(truth))
        else:
            # without names (none stored, no card) polygons' classes are ids, as a truth raster's are
            limit = len(names) if names else MAX_CLASSES
            ids = names or [str(i) for i in range(MAX_CLASSES)]
            from geoseg.labels.polygons import is_point_layer, read_vector
            from geoseg.sampling import sample_units

            table = read_vector(truth, "truth", label_polygons.class_field)
            if is_point_layer(table):
                if errors is not None:
                    raise ConfigurationError(
                        f"{truth}: holds sample points; errors polygons need truth areas"
                    )
                grid = (pred_ds.crs, pred_ds.transform, pred_ds.width, pred_ds.height)
                units = sample_units(table, label_polygons, ids, *grid)
            else:
                read_truth = _polygon_truth(
                    truth, table, label_polygons, ids, pred_ds, ignore_index, prediction
                )
        confusion = np.zeros((limit, limit), dtype=np.int64)
        area_confusion = np.zeros((limit, limit), dtype=np.float64)
        mapped_area = np.zeros(limit, dtype=np.float64)
        strata = np.full(0 if units is None else len(units.rows), -1, dtype=np.int64)  # map class per unit
        ground = _ground(pred_ds, prediction)
        staged = None
        if review is not None:
            staged = ErrorRaster(pred_ds, limit, stack.enter_context(staging_folder(review)))
        ignored = 0
        windows = list(block_windows(pred_ds.height, pred_ds.width, block_size))
        for done, window in enumerate(windows, start=1):
            with read_failures(prediction):
                predicted = pred_ds.read(1, window=window)
            mapped = mapped_mask(pred_ds, predicted, window)
            areas = ground.pixel_areas(int(window.row_off), int(window.col_off), *predicted.shape)
            inside = mapped & (predicted < limit)
            mapped_area += np.bincount(predicted[inside].astype(np.int64), areas[inside], minlength=limit)
            if units is not None:
                _strata(units, window, predicted, mapped, strata)
                continue
            labels = read_truth(window)
            valid = (labels != IGNORE) & mapped
            values = predicted[valid]
            _check_range(values, limit, prediction)
            confusion += confusion_matrix(labels[valid], values, limit)
            pairs = labels[valid].astype(np.int64) * limit + values
            area_confusion += np.bincount(pairs, areas[valid], minlength=limit * limit).reshape(limit, limit)
            ignored += int(valid.size - np.count_nonzero(valid))
            if staged is not None:
                staged.write(window, labels, predicted, valid)
            if progress is not None:
                progress(done, len(windows))
        error_polygons = None
        if staged is not None:
            error_polygons = write_error_polygons(
                staged,
                names or [str(i) for i in range(limit)],
                review,
                overwrite,
                fields=("truth", "predicted") if changes is None else ("from", "to"),
                classes=legend,
                inputs=[prediction, truth],
            )
    if units is not None:
        _check_range(strata[strata >= 0], limit, prediction)
        return _sample_result(str(prediction), str(truth), names, colors, units, strata, mapped_area,
                              exclude_classes, ground)  # fmt: skip
    if not names:
        seen = np.flatnonzero(confusion.sum(axis=0) + confusion.sum(axis=1))
        count = int(seen.max()) + 1 if seen.size else 1
        confusion = confusion[:count, :count]
        area_confusion, mapped_area = area_confusion[:count, :count], mapped_area[:count]
        names = [str(i) for i in range(count)]
    result = _result(str(prediction), str(truth), names, confusion, exclude_classes, ignored, colors)
    unit = "m2" if ground.crs is not None else "raster units²"
    return dataclasses.replace(
        result,
        area_confusion=area_confusion,
        mapped_area=mapped_area,
        area_unit=unit,
        error_polygons=error_polygons,
        kind="truth" if changes is None else "changes",
    )


def _check_range(values: np.ndarray, limit: int, prediction) -> None:
    if values.size and (values.min() < 0 or values.max() >= limit):
        bad = np.unique(values[(values < 0) | (values >= limit)])
        raise InputError(
            f"{prediction}: class value(s) {', '.join(str(v) for v in bad[:5])} outside the "
            f"{limit} classes 0..{limit - 1}; check preset=NAME or card=FILE"
        )


def _older_map(dataset, names: list[str] | None, path) -> tuple[int, Callable]:
    """The class limit and a window → classes reader of the older map of a comparison (IGNORE where it
    has no class: nodata, masked)."""
    check_class_raster(dataset, str(path), "a comparison (changes)")
    older = read_class_names(dataset)
    if names and older and [n.casefold() for n in older] != [n.casefold() for n in names]:
        raise InputError(
            f"{path}: its classes ({', '.join(older)}) are not those of the newer map ({', '.join(names)}); "
            "two maps compare only in one class scheme"
        )
    limit = len(names) if names else MAX_CLASSES

    def read(window) -> np.ndarray:
        with read_failures(path):
            values = dataset.read(1, window=window)
        classes = np.where(mapped_mask(dataset, values, window), values, IGNORE)
        _check_range(classes[classes != IGNORE], limit, path)
        return classes.astype(np.uint8)

    return limit, read


def _strata(
    units: SampleUnits, window, predicted: np.ndarray, mapped: np.ndarray, strata: np.ndarray
) -> None:
    """Fill in the map class of the sample units in ``window`` (-1 where the map has no class there)."""
    r0, c0 = int(window.row_off), int(window.col_off)
    here = np.flatnonzero(
        (units.rows >= r0) & (units.rows < r0 + predicted.shape[0])
        & (units.cols >= c0) & (units.cols < c0 + predicted.shape[1])
    )  # fmt: skip
    rows, cols = units.rows[here] - r0, units.cols[here] - c0
    strata[here] = np.where(mapped[rows, cols], predicted[rows, cols].astype(np.int64), -1)


def _sample_result(
    prediction: str,
    truth: str,
    names: list[str] | None,
    colors,
    units: SampleUnits,
    strata: np.ndarray,
    mapped_area: np.ndarray,
    exclude_classes: Iterable[str],
    ground,
) -> EvaluationResult:
    """The stratified estimates of a labelled sample: map classes are the strata, weighted by mapped area."""
    if ground.crs is None:
        raise InputError(f"{prediction}: has no CRS, so its mapped areas are unknown")
    used = strata >= 0
    if not used.any():
        raise InputError(
            f"{truth}: no labelled sample unit falls on a mapped pixel of {prediction} "
            f"({units.unlabelled} without a reference, {units.outside} outside the map, "
            f"{int((~used).sum())} on nodata)"
        )
    limit = len(mapped_area)
    counts = np.zeros((limit, limit), dtype=np.int64)  # rows map (strata), columns reference
    np.add.at(counts, (strata[used], units.reference[used]), 1)
    if not names:
        seen = np.flatnonzero(counts.sum(axis=0) + counts.sum(axis=1) + mapped_area)
        count = int(seen.max()) + 1
        counts, mapped_area = counts[:count, :count], mapped_area[:count]
        names = [str(i) for i in range(count)]
    try:
        estimates = stratified_estimates(counts, mapped_area)
    except ValueError:
        empty = [names[i] for i in np.flatnonzero((mapped_area > 0) & (counts.sum(axis=1) == 0))]
        raise InputError(
            f"{truth}: no labelled sample unit lies on the map's {', '.join(empty)}, so its area cannot be "
            "estimated; label units of every mapped class (geoseg sample draws them per class)"
        ) from None
    result = _result(
        prediction, truth, names, counts.T, exclude_classes, 0, colors, scored=estimates.proportions.T
    )
    sample = {
        "units": int(used.sum()),
        "unlabelled": units.unlabelled,
        "outside_map": units.outside,
        "on_nodata": int((~used).sum()),
    }
    return dataclasses.replace(
        result,
        overall_accuracy=estimates.overall_accuracy,
        pixels_ignored=units.unlabelled + units.outside + sample["on_nodata"],
        area_confusion=estimates.proportions.T * mapped_area.sum(),
        mapped_area=mapped_area,
        area_unit="m2",
        kind="sample",
        estimates=estimates,
        sample=sample,
    )


def _result(
    prediction: str,
    truth: str,
    names: list[str],
    confusion: np.ndarray,
    exclude_classes: Iterable[str],
    ignored: int,
    colors: list | None = None,
    scored: np.ndarray | None = None,
) -> EvaluationResult:
    try:
        excluded = class_indices(names, exclude_classes)
    except ValueError as error:
        raise ConfigurationError(f"exclude_classes={list(exclude_classes)!r}: {error}") from error
    total = int(confusion.sum())
    if total == 0:
        raise InputError(
            f"{prediction} vs {truth}: no pixels to compare (every pixel is ignored in the truth or "
            "nodata in the prediction); check ignore_index=N, label_offset=N and the prediction's nodata"
        )
    scores = scores_from_confusion(confusion if scored is None else scored, excluded)
    per_class = [
        ClassResult(
            index=i,
            name=name,
            precision=float(scores.precision[i]),
            recall=float(scores.recall[i]),
            f1=float(scores.f1[i]),
            iou=float(scores.iou[i]),
            pixels=int(confusion[i].sum()),
            predicted_pixels=int(confusion[:, i].sum()),
            excluded=not bool(scores.included[i]),
        )
        for i, name in enumerate(names)
    ]
    return EvaluationResult(
        prediction=prediction,
        truth=truth,
        class_names=list(names),
        confusion=confusion,
        overall_accuracy=scores.overall_accuracy,
        mean_f1=scores.mean_f1,
        mean_iou=scores.mean_iou,
        per_class=per_class,
        excluded_classes=[names[i] for i in sorted(set(excluded))],
        pixels_evaluated=total,
        pixels_ignored=ignored,
        class_colors=[tuple(int(v) for v in c[:3]) for c in colors] if colors else None,
    )


def write_confusion_csv(result: EvaluationResult, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The confusion matrix as CSV (rows: truth, columns: prediction, headed by class names), atomically."""
    with (
        atomic_output(path, overwrite=overwrite) as tmp,
        tmp.open("w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(["truth \\ prediction", *result.class_names])
        for name, row in zip(result.class_names, result.confusion.tolist(), strict=True):
            writer.writerow([name, *row])
    return Path(path)


# --- rasters -------------------------------------------------------------------------------------------


def _open(path: str | os.PathLike, role: str):
    """Open with the shared reader, saying which of the two rasters is missing."""
    if not is_gdal_path(path) and not Path(path).exists():
        raise InputError(f"{path}: {role} raster not found")
    return open_raster(path)


def _polygon_truth(truth, table, options: VectorLabelOptions, names, pred_ds, ignore_index, prediction):
    """A window → truth labels reader for label polygons (read as ``table``) on the prediction's grid."""
    from geoseg.labels.polygons import load_label_polygons, on_grid

    polygons = load_label_polygons(truth, options, names, table)
    grid, _ = on_grid(polygons, pred_ds.crs, pred_ds.transform, pred_ds.width, pred_ds.height, ignore_index)
    if grid is None:
        raise InputError(f"{truth}: no truth polygon falls on {prediction}; check that both cover one place")

    def read(window) -> np.ndarray:
        # each block once: rasterized directly, not through the tile cache training reads by
        return grid.rasterize(int(window.row_off), int(window.col_off), int(window.height), int(window.width))

    return read


def _ground(dataset, path):
    """True pixel areas of a raster (see :mod:`geoseg.vector.area`); square raster units without a CRS."""
    from geoseg.raster.grids import placement
    from geoseg.vector.area import GroundArea

    crs = dataset.crs if placement(dataset) == "transform" else None
    return GroundArea(crs, dataset.transform, dataset.width, dataset.height, str(path))


def _class_names_and_colors(card: ModelCard | None, prediction) -> tuple[list[str] | None, list | None]:
    if card is not None:
        return card.class_names, [c.color for c in card.classes]
    names = read_class_names(prediction)
    if not names:
        return None, None
    if len(names) > MAX_CLASSES:
        raise InputError(
            f"{prediction.name}: {len(names)} class names; at most {MAX_CLASSES} classes are supported"
        )
    try:
        table = prediction.colormap(1)
    except ValueError:
        return names, None
    return names, [tuple(table[i][:3]) for i in range(len(names))]
