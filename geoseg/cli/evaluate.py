"""``geoseg evaluate``: accuracy of a class raster against ground truth, as the MANet paper reports it."""

from __future__ import annotations

import math
import os

import click

from geoseg.cli.options import (
    NameListType,
    card_option,
    emit_json,
    ignore_index_option,
    json_option,
    label_offset_option,
    label_polygon_options,
    overwrite_option,
    preset_option,
    progress_reporter,
    quiet_option,
    styles_option,
)


@click.command(short_help="Accuracy of a class raster against ground truth.")
@click.argument("prediction", type=click.Path(dir_okay=False))
@click.argument("truth", type=click.Path(dir_okay=False))
@preset_option
@card_option
@ignore_index_option
@label_offset_option
@label_polygon_options
@click.option(
    "--exclude-classes",
    type=NameListType(),
    default=None,
    help="Classes (names or indices) left out of mean F1 and mIoU but kept in overall accuracy, "
    "e.g. clutter for the paper's ISPRS figures.",
)
@click.option(
    "--confusion",
    "confusion_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the confusion matrix (rows truth, columns prediction) as CSV.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also draw the row-normalised confusion matrix and per-class F1/IoU bars into a PNG.",
)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the wrong pixels as polygons (.gpkg, .fgb, .geojson, .shp) with truth, predicted and "
    "area_m2, largest first, to review in QGIS (styled by predicted class in the class colours).",
)
@click.option(
    "--changes",
    "changes_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Compare two maps instead: TRUTH is the older class map on the same grid; write the changed pixels "
    "as polygons (from, to, area_m2; largest first) and report the from/to matrix in hectares.",
)
@styles_option
@overwrite_option
@json_option
@quiet_option
def evaluate(
    prediction: str,
    truth: str,
    preset: str | None,
    card_path: str | None,
    ignore_index: int | None,
    label_offset: int,
    exclude_classes: list[str] | None,
    confusion_path: str | None,
    plot_path: str | None,
    errors_path: str | None,
    changes_path: str | None,
    styles: bool,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
    label_polygons=None,
) -> None:
    """Compare PREDICTION (a class raster, e.g. from geoseg predict) with TRUTH (class indices, or RGB
    colours converted with the preset's or card's colours) on the same grid.

    Reports overall accuracy over all classes, per-class precision, recall, F1, IoU and truth pixel counts,
    and mean F1 and mIoU over the classes not excluded. Prediction nodata (255) and ignored truth pixels are
    left out. A class with neither truth nor predicted pixels has no F1/IoU and is not averaged.
    TRUTH may be polygons from the GIS (.gpkg, .shp, .fgb, .geojson, .parquet; FILE.gpkg:LAYER) with
    --class-field: rasterized on the prediction's grid by the rules train uses (pixel centres, --aoi,
    --background, --all-touched, --priority), so the scores agree with a validation on the same data.
    TRUTH of points is a stratified sample labelled by a person (geoseg sample, --class-field names the
    reference column): the map classes are the strata, and the report gives each class's estimated area
    with its 95 % interval and user's, producer's and overall accuracy (Olofsson et al. 2014).
    With --changes, TRUTH is an older map of the same grid and the report is what changed, in hectares.

    \b
    geoseg evaluate classes.tif truth.tif --preset vaihingen --exclude-classes clutter
    geoseg evaluate classes.tif label.png --preset loveda --label-offset 1 --json
    geoseg evaluate classes.tif truth.tif --plot accuracy.png
    geoseg evaluate classes.tif digitized.gpkg:labels --class-field klasse --aoi digitized.gpkg:areas
    geoseg evaluate classes.tif samples.gpkg --class-field reference --json
    geoseg evaluate classes_2024.tif classes_2020.tif --changes changes.gpkg
    """
    from geoseg.api import evaluate as run_evaluation
    from geoseg.api import write_confusion_csv
    from geoseg.atomic import OutputSet, check_output_path
    from geoseg.labels.polygons import is_vector_path

    if preset and card_path:
        raise click.UsageError("give either --preset or --card, not both")
    if is_vector_path(truth) and label_polygons is None:
        raise click.UsageError(f"TRUTH {truth} is a vector file: name its class column with --class-field")
    if label_polygons is not None and not is_vector_path(truth):
        raise click.UsageError("--class-field reads truth polygons: TRUTH must be a vector file")
    if changes_path and (errors_path or label_polygons is not None):
        raise click.UsageError(
            "--changes compares two class rasters: give neither --errors nor --class-field"
        )
    if confusion_path and plot_path and os.path.abspath(confusion_path) == os.path.abspath(plot_path):
        raise click.UsageError("--confusion and --plot name the same file; give each its own name")
    if confusion_path:
        check_output_path(confusion_path, overwrite, inputs=[prediction, truth])
    if plot_path:
        from geoseg.plots.common import check_png_output

        check_png_output(plot_path, overwrite, inputs=[prediction, truth])
    callback, close = progress_reporter("evaluating", quiet or as_json)
    try:
        result = run_evaluation(
            prediction,
            truth,
            preset=preset,
            card=card_path,
            ignore_index=ignore_index,
            label_offset=label_offset,
            exclude_classes=exclude_classes or (),
            progress=callback,
            label_polygons=label_polygons,
            errors=errors_path,
            changes=changes_path,
            overwrite=overwrite,
            styles=styles,
        )
    finally:
        close()
    with OutputSet() as unit:  # the CSV and the picture appear together or not at all
        if confusion_path:
            write_confusion_csv(result, unit.stage("confusion", confusion_path), overwrite=True)
        if plot_path:
            from geoseg.api import plot_evaluation

            plot_evaluation(result, unit.stage("plot", plot_path), overwrite=True)
    if as_json:
        record = result.to_dict()
        if confusion_path:
            record["confusion_csv"] = confusion_path
        if plot_path:
            record["plot"] = plot_path
        if errors_path:
            record["errors"] = errors_path
        if changes_path:
            record["changes"]["polygons"] = changes_path
        emit_json(record)
        return
    _render(result, confusion_path, plot_path, errors_path or changes_path)


def _percent(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _render(result, confusion_path: str | None, plot_path: str | None, polygons_path: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a file or pipe: no wrapping at 80 columns
        console.width = max(console.width, 120)
    if result.kind == "changes":
        _render_changes(console, result, polygons_path)
        return
    table = Table(title=f"{result.prediction} vs {result.truth} (scores in %)", title_justify="left")
    table.add_column("class", no_wrap=True)
    for header in ("precision", "recall", "F1", "IoU", "truth pixels", "predicted pixels"):
        table.add_column(header, justify="right")
    for c in result.per_class:
        name = f"{c.name} (excluded)" if c.excluded else c.name
        table.add_row(
            name,
            _percent(c.precision),
            _percent(c.recall),
            _percent(c.f1),
            _percent(c.iou),
            f"{c.pixels:,}",
            f"{c.predicted_pixels:,}",
        )
    console.print(table)
    scope = f" without {', '.join(result.excluded_classes)}" if result.excluded_classes else ""
    console.print(
        f"overall accuracy {_percent(result.overall_accuracy)} %  ·  "
        f"mean F1{scope} {_percent(result.mean_f1)} %"
        f"  ·  mIoU{scope} {_percent(result.mean_iou)} %"
    )
    console.print(f"{result.pixels_evaluated:,} pixels compared, {result.pixels_ignored:,} ignored")
    if result.kind == "sample":
        _render_estimates(console, result)
    elif result.area_confusion is not None and result.area_unit == "m2":
        areas = result.areas()
        console.print(
            f"{result.area_confusion.sum() / 1e4:,.4f} ha compared on the ellipsoid  ·  area-weighted "
            f"overall accuracy {_percent(areas['area_weighted_overall_accuracy'])} %"
        )
    if confusion_path:
        console.print(f"confusion matrix: {confusion_path}")
    if plot_path:
        console.print(f"plot: {plot_path}")
    if result.error_polygons is not None:
        console.print(f"wrong pixels as {result.error_polygons:,} polygons, largest first: {polygons_path}")


def _hectares(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4f}"


def _render_estimates(console, result) -> None:
    """The stratified estimates of a sample: areas with 95 % intervals, user's and producer's accuracy."""
    from rich.table import Table

    record = result.to_dict()
    table = Table(title="estimated from the sample (Olofsson et al. 2014; ± is the 95 % interval)")
    table.add_column("class", no_wrap=True)
    for header in ("mapped ha", "estimated ha", "± ha", "user's %", "±", "producer's %", "±", "units"):
        table.add_column(header, justify="right")
    for name, e in record["area_estimates"].items():
        table.add_row(
            name,
            _hectares(e["mapped_area_ha"]),
            _hectares(e["area_ha"]),
            _hectares(e["area_ci95_ha"]),
            _percent(e["users_accuracy"]),
            _percent(e["users_accuracy_ci95"]),
            _percent(e["producers_accuracy"]),
            _percent(e["producers_accuracy_ci95"]),
            str(e["units"]),
        )
    console.print(table)
    units, interval = record["sample_units"], _percent(record["overall_accuracy_ci95"])
    console.print(
        f"overall accuracy {_percent(result.overall_accuracy)} ± {interval} % "
        f"from {units['units']:,} units; left out: {units['unlabelled']:,} without a reference, "
        f"{units['outside_map']:,} outside the map, {units['on_nodata']:,} on nodata"
    )


def _render_changes(console, result, polygons_path: str | None) -> None:
    """Two maps compared: the from/to matrix and the changed area."""
    from rich.table import Table

    changes = result.changes()
    unit = changes["unit"]
    table = Table(
        title=f"{result.truth} → {result.prediction} ({unit}; rows from, columns to)", title_justify="left"
    )
    table.add_column("from \\ to", no_wrap=True)
    for name in result.class_names:
        table.add_column(name, justify="right")
    for name, row in zip(result.class_names, changes["from_to"], strict=True):
        table.add_row(name, *(_hectares(v) for v in row))
    console.print(table)
    console.print(
        f"changed {_hectares(changes['changed'])} {unit} ({changes['pixels_changed']:,} pixels), unchanged "
        f"{_hectares(changes['unchanged'])} {unit}; {result.pixels_ignored:,} pixels nodata in either map"
    )
    if result.error_polygons is not None:
        console.print(f"changes as {result.error_polygons:,} polygons, largest first: {polygons_path}")
