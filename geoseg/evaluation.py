"""Measuring a class raster against a ground-truth raster, block by block, in bounded memory.

The rasters must share a grid (:func:`geoseg.raster.grids.check_same_grid`). Ground truth may hold class
indices or colours (see :mod:`geoseg.labels`). Pixels are left out where the prediction is nodata (255 or the
raster's nodata value) or the truth is ignored (ignore index, nodata, values below the label offset, black in
colour labels). The maths lives in :mod:`geoseg.metrics`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.atomic import atomic_output
from geoseg.errors import ConfigurationError, InputError
from geoseg.labels import IGNORE, MAX_CLASSES, LabelEncoding, read_labels
from geoseg.metrics import class_indices, confusion_matrix, scores_from_confusion
from geoseg.model.card import ModelCard
from geoseg.model.presets import resolve_card
from geoseg.raster.classes import NODATA_CLASS, check_card_matches, check_class_raster, read_class_names
from geoseg.raster.grids import check_same_grid
from geoseg.raster.reading import (
    check_decodable,
    is_gdal_path,
    open_raster,
    read_failures,
    read_valid_mask,
)

if TYPE_CHECKING:
    from geoseg.vector_labels import VectorLabelOptions

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
    error_polygons: int | None = None  # polygons written to the errors output, when asked for

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
    overwrite: bool = False,
) -> EvaluationResult:
    """Overall accuracy, per-class precision/recall/F1/IoU, mean F1 and mIoU of a class raster against truth.

    Class names and colours come from ``card``/``preset``, else from the prediction raster (names tag and
    colour table written by ``geoseg predict``), else classes are numbered. ``ignore_index`` defaults to
    the card's. ``exclude_classes`` (names or indices) are left out of the means but not of the overall
    accuracy, the paper's convention. Memory depends on ``block_size``, not on the raster size.
    ``label_polygons`` reads ``truth`` as label polygons, rasterized on the prediction's grid by the rules
    training uses (:mod:`geoseg.vector_labels`), so a validation score and this one agree. ``errors``
    writes the wrongly classified pixels as polygons there (:mod:`geoseg.vector.review`).
    """
    model_card = resolve_card(preset, card)
    if block_size <= 0:
        raise ConfigurationError(f"block size must be positive, got {block_size}")
    if errors is not None:
        from geoseg.vector.review import (
            ErrorRaster,
            check_errors_output,
            staging_folder,
            write_error_polygons,
        )

        check_errors_output(errors, overwrite, [prediction, truth])
    with contextlib.ExitStack() as stack:
        pred_ds = stack.enter_context(_open(prediction, "prediction"))
        check_decodable(pred_ds, [1], str(prediction))
        if label_polygons is None:
            truth_ds = stack.enter_context(_open(truth, "truth"))
            check_decodable(truth_ds, list(truth_ds.indexes), str(truth))
            check_same_grid(pred_ds, truth_ds, str(prediction), str(truth))
        check_class_raster(pred_ds, str(prediction), "evaluate")
        check_card_matches(model_card, pred_ds, str(prediction), "score")
        names, colors = _class_names_and_colors(model_card, pred_ds)
        if ignore_index is None and model_card is not None:
            ignore_index = model_card.ignore_index
        if label_polygons is None:
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
            read_truth = _polygon_truth(truth, label_polygons, ids, pred_ds, ignore_index, prediction)
        pred_nodata = {NODATA_CLASS} | ({int(pred_ds.nodata)} if _is_integral(pred_ds.nodata) else set())
        confusion = np.zeros((limit, limit), dtype=np.int64)
        area_confusion = np.zeros((limit, limit), dtype=np.float64)
        mapped_area = np.zeros(limit, dtype=np.float64)
        ground = _ground(pred_ds, prediction)
        staged = None
        if errors is not None:
            staged = ErrorRaster(pred_ds, limit, stack.enter_context(staging_folder(errors)))
        ignored = 0
        windows = list(_blocks(pred_ds.height, pred_ds.width, block_size))
        for done, window in enumerate(windows, start=1):
            with read_failures(prediction):
                predicted = pred_ds.read(1, window=window)
                predicted_valid = read_valid_mask(pred_ds, window)
            labels = read_truth(window)
            valid = labels != IGNORE
            if predicted_valid is not None:  # another tool's internal mask or alpha band: no prediction
                valid &= predicted_valid
            for value in pred_nodata:
                valid &= predicted != value
            values = predicted[valid]
            if values.size and (values.min() < 0 or values.max() >= limit):
                bad = np.unique(values[(values < 0) | (values >= limit)])
                raise InputError(
                    f"{prediction}: class value(s) {', '.join(str(v) for v in bad[:5])} outside the "
                    f"{limit} classes 0..{limit - 1}; check --preset/--card"
                )
            confusion += confusion_matrix(labels[valid], values, limit)
            areas = ground.pixel_areas(int(window.row_off), int(window.col_off), *predicted.shape)
            pairs = labels[valid].astype(np.int64) * limit + values
            area_confusion += np.bincount(pairs, areas[valid], minlength=limit * limit).reshape(limit, limit)
            mapped = predicted_valid if predicted_valid is not None else np.ones(predicted.shape, bool)
            for value in pred_nodata:
                mapped &= predicted != value
            inside = mapped & (predicted < limit)
            mapped_area += np.bincount(predicted[inside].astype(np.int64), areas[inside], minlength=limit)
            ignored += int(valid.size - np.count_nonzero(valid))
            if staged is not None:
                staged.write(window, labels, predicted, valid)
            if progress is not None:
                progress(done, len(windows))
        error_polygons = None
        if staged is not None:
            error_polygons = write_error_polygons(
                staged, names or [str(i) for i in range(limit)], errors, overwrite
            )
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
    )


def _result(
    prediction: str,
    truth: str,
    names: list[str],
    confusion: np.ndarray,
    exclude_classes: Iterable[str],
    ignored: int,
    colors: list | None = None,
) -> EvaluationResult:
    try:
        excluded = class_indices(names, exclude_classes)
    except ValueError as error:
        raise ConfigurationError(f"--exclude-classes: {error}") from error
    total = int(confusion.sum())
    if total == 0:
        raise InputError(
            f"{prediction} vs {truth}: no pixels to compare (every pixel is ignored in the truth or "
            "nodata in the prediction); check --ignore-index/--label-offset and the prediction's nodata"
        )
    scores = scores_from_confusion(confusion, excluded)
    per_class = [
        ClassResult(
            index=i,
            name=name,
            precision=float(scores.precision[i]),
            recall=float(scores.recall[i]),
            f1=float(scores.f1[i]),
            iou=float(scores.iou[i]),
            pixels=int(scores.truth_pixels[i]),
            predicted_pixels=int(scores.predicted_pixels[i]),
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


def _polygon_truth(truth, options: VectorLabelOptions, names, pred_ds, ignore_index, prediction):
    """A window → truth labels reader for label polygons on the prediction's grid."""
    from geoseg.vector_labels import load_label_polygons, on_grid

    polygons = load_label_polygons(truth, options, names)
    grid, _ = on_grid(polygons, pred_ds.crs, pred_ds.transform, pred_ds.width, pred_ds.height, ignore_index)
    if grid is None:
        raise InputError(f"{truth}: no truth polygon falls on {prediction}; check that both cover one place")

    def read(window) -> np.ndarray:
        return grid.read(int(window.row_off), int(window.col_off), int(window.height), int(window.width))

    return read


def _ground(dataset, path):
    """True pixel areas of a raster (see :mod:`geoseg.vector.area`); square raster units without a CRS."""
    from geoseg.raster.grids import placement
    from geoseg.vector.area import GroundArea

    crs = dataset.crs if placement(dataset) == "transform" else None
    return GroundArea(crs, dataset.transform, dataset.width, dataset.height, str(path))


def _is_integral(value: float | None) -> bool:
    return value is not None and not math.isnan(value) and float(value).is_integer()


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


def _blocks(height: int, width: int, size: int) -> Iterator:
    from rasterio.windows import Window

    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))
