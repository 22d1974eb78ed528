"""``geoseg predict``: class rasters from orthophotos of any size, aligned pixel for pixel with the input."""

from __future__ import annotations

import contextlib

import click

from geoseg.cli.options import (
    NameListType,
    bands_option,
    batch_size_option,
    calibration_option,
    card_option,
    check_tiling,
    compile_option,
    compress_option,
    device_option,
    emit_json,
    engine_option,
    flags_for_parameters,
    json_option,
    model_option,
    overlap_option,
    overwrite_option,
    predict_precision_option,
    preset_option,
    progress_reporter,
    quiet_option,
    scale_option,
    styles_option,
    tile_option,
    tta_option,
)


def _check_workers(ctx, param, value: str) -> int | str:
    """A positive number of worker processes, or ``auto`` (one per GPU with CUDA, else one)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        workers = int(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of workers or auto") from None
    if workers < 1:
        raise click.BadParameter(f"{workers}: give at least 1 worker (1 runs in this process), or auto")
    return workers


@click.command(short_help="Segment orthophotos into class rasters.")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option(
    "--from-file",
    "input_list",
    type=click.File("r", encoding="utf-8"),
    default=None,
    metavar="FILE|-",
    help="Read inputs from FILE (- for standard input), one path or URL per line; # starts a comment.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    help="Class raster for one input; a folder for several (<stem>.classes.tif, <stem>.confidence.tif...).",
)
@model_option
@preset_option
@card_option
@tile_option
@overlap_option
@click.option(
    "--border-context/--no-border-context",
    default=True,
    show_default=True,
    help="Mirror each scene about its own edges (by half the overlap, at least an eighth of the tile) so "
    "that pixels on its border are predicted with context on every side, not from tile edges.",
)
@batch_size_option
@device_option
@predict_precision_option
@engine_option
@calibration_option
@compile_option
@tta_option
@bands_option
@click.option(
    "--assets",
    type=NameListType(),
    default=None,
    help="For STAC Item inputs: the asset keys to stack, in the model's band order (default: the assets "
    "whose bands' common names match the card's bands).",
)
@scale_option
@click.option(
    "--confidence",
    is_flag=True,
    help="Also write the top class probability (uint8, 0-255; no-data pixels masked, not 0).",
)
@click.option(
    "--probabilities",
    is_flag=True,
    help="Also write one uint8 band per class (probability x 255; no-data pixels masked, not 0).",
)
@click.option(
    "--vectorize",
    "vector",
    default=None,
    metavar="OUTPUT|FORMAT",
    help="Also write polygons (geoseg vectorize with its defaults): a .gpkg/.fgb/.geojson/.parquet/.shp file "
    "for one input, or a format (gpkg...) giving <stem>.polygons.<format> beside the class rasters.",
)
@click.option(
    "--quicklook",
    is_flag=True,
    help="Also draw <stem>.quicklook.png beside each class raster (legend, scale bar; see geoseg quicklook).",
)
@compress_option
@styles_option
@click.option(
    "--workers",
    default="1",
    show_default=True,
    callback=_check_workers,
    metavar="N|auto",
    help="Worker processes computing regions on a local Dask cluster (cores shared out; auto with --device "
    "cuda: one per GPU). 1 runs in this process.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Run the regions on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (inputs, model and output "
    "folder must be reachable by its workers).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep finished regions if interrupted, and compute only the missing ones when run again.",
)
@overwrite_option
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Skip scenes whose outputs all exist (JSON status 'skipped'): a re-run carries on where it stopped.",
)
@click.option("--keep-going", is_flag=True, help="Carry on past a failing scene; exit code 1 at the end.")
@json_option
@quiet_option
@click.pass_context
def predict(
    ctx: click.Context,
    inputs: tuple[str, ...],
    input_list,
    output: str,
    model_path: str | None,
    preset: str | None,
    card_path: str | None,
    tile: int | None,
    overlap: int | None,
    border_context: bool,
    batch_size: int | str,
    device: str,
    precision: str,
    engine: str,
    calibration: tuple[str, ...],
    compile_network: bool,
    tta: str,
    bands: list[int] | None,
    assets: list[str] | None,
    scale: tuple[float, float] | str | None,
    confidence: bool,
    probabilities: bool,
    vector: str | None,
    quicklook: bool,
    compress: str,
    styles: bool,
    workers: int | str,
    scheduler: str | None,
    resume: bool,
    overwrite: bool,
    skip_existing: bool,
    keep_going: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Segment INPUT rasters (GeoTIFF or anything GDAL reads, /vsizip/ paths and URLs included; a STAC Item
    .json path or URL is stacked from the assets whose bands match the model's) with a MANet,
    MACU-Net or MAResU-Net checkpoint. Outputs have the input's CRS, transform and size, nodata 255 where
    the input has no data, colours and class names, overviews and a cloud-optimized layout. Scenes of any
    size run in bounded memory; overlapping tiles are blended without seams.

    \b
    geoseg predict scene.tif -o classes.tif
    geoseg predict scene.tif -o classes.tif -m model.safetensors --confidence
    geoseg predict tiles/*.tif -o results/ --keep-going --json
    find /data -name '*.tif' | geoseg predict --from-file - -o results/ --skip-existing --json
    geoseg predict landsat.tif -o classes.tif --scale auto --bands 4,3,2
    geoseg predict https://example.com/stac/items/scene-42.json -o classes.tif
    geoseg predict big.tif -o classes.tif --workers 4 --resume
    geoseg predict big.tif -o classes.tif --device cuda --workers auto
    geoseg predict scene.tif -o classes.tif --compress zstd --no-styles
    """
    from geoseg.api import PredictOptions, iter_predict

    if preset and card_path:
        raise click.UsageError("give either --preset or --card, not both")
    if skip_existing and overwrite:
        raise click.UsageError("give either --skip-existing or --overwrite, not both")
    if input_list is not None:
        lines = (line.strip() for line in input_list)
        inputs += tuple(line for line in lines if line and not line.startswith("#"))
    if not inputs:
        raise click.UsageError("no inputs: give INPUT... or --from-file FILE (- for standard input)")
    check_tiling(tile, overlap)

    callback, close = progress_reporter("predicting", quiet)
    failures = 0
    try:
        options = PredictOptions(
            tile=tile,
            overlap=overlap,
            margin=None if border_context else 0,
            batch_size=batch_size,
            device=device,
            precision=precision,
            engine=engine,
            calibration=list(calibration) or None,
            compile=compile_network,
            tta=tta,
            bands=bands,
            scale=scale,
            confidence=confidence,
            probabilities=probabilities,
            vectorize=vector,
            quicklook=quicklook,
            compress=compress,
            styles=styles,
            overwrite=overwrite,
            keep_going=keep_going,
            skip_existing=skip_existing,
            assets=assets,
            workers=workers,
            scheduler=scheduler,
            resume=resume,
        )
        for result in iter_predict(
            list(inputs),
            output,
            options,
            model=model_path,
            preset=preset,
            card=card_path,
            progress=callback,
            status=None if callback is None else callback.status,
        ):
            # lines start below the bar, which is drawn again under them
            with contextlib.nullcontext() if callback is None else callback.above():
                if result.error is not None:
                    failures += 1
                    click.echo(f"Error: {flags_for_parameters(result.error)}", err=True)
                if as_json:
                    emit_json(result.to_dict())
                elif result.status == "skipped" and not quiet:
                    click.echo(f"{result.input}: skipped, {result.outputs['classes']} exists")
                elif result.error is None and not quiet:
                    click.echo(
                        f"{result.input} -> {result.outputs['classes']} ({result.width}x{result.height} "
                        f"px, {result.tiles} tiles, {result.seconds:.1f} s on {result.device} in "
                        f"{ran(result)})"
                    )
    finally:
        close()
    if failures:
        ctx.exit(1)


def ran(result) -> str:
    """``fp32 (onnxruntime)``, ``int8 (onnxruntime; float32: ...)``: what computed the network."""
    kept = f"; float32: {', '.join(result.float32_layers)}" if result.float32_layers else ""
    return f"{result.precision} ({result.engine}{kept})"
