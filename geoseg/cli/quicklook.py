"""``geoseg quicklook``: a class raster as a PNG in its own colours, to look at without a GIS."""

from __future__ import annotations

import click

from geoseg.cli.options import card_option, emit_json, json_option, overwrite_option, preset_option
from geoseg.plots.quicklook import DEFAULT_MAX_SIZE, MIN_MAX_SIZE


@click.command(short_help="Draw a class raster as a PNG with legend and scale bar.")
@click.argument("classes", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option(
    "--over",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image on the same grid to draw under the class colours (its first three bands, or one grey band).",
)
@click.option(
    "--max-size",
    type=click.IntRange(min=MIN_MAX_SIZE),
    default=DEFAULT_MAX_SIZE,
    show_default=True,
    help="Largest width and height of the PNG in pixels, legend included.",
)
@preset_option
@card_option
@overwrite_option
@json_option
def quicklook(
    classes: str,
    output: str,
    over: str | None,
    max_size: int,
    preset: str | None,
    card_path: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Draw CLASSES (a class raster, e.g. from geoseg predict) into a PNG: classes in the raster's own colours
    and names (as QGIS shows them; --preset/--card override), no-data transparent, a legend with each class's
    share of the map, and a scale bar in metres when the raster has a CRS. The raster is read through its
    overviews, so a map of any size takes about the same memory and time.

    \b
    geoseg quicklook classes.tif -o classes.png
    geoseg quicklook classes.tif -o check.png --over scene.tif --max-size 1000
    """
    from geoseg.api import quicklook as draw

    if preset and card_path:
        raise click.UsageError("give either --preset or --card, not both")
    result = draw(
        classes, output, over=over, max_size=max_size, preset=preset, card=card_path, overwrite=overwrite
    )
    if as_json:
        emit_json(
            {
                "input": classes,
                "output": str(result.path),
                "width": result.width,
                "height": result.height,
                "metres_per_pixel": result.metres_per_pixel,
                "class_fractions": {e.name: round(e.share, 6) for e in result.legend},
            }
        )
        return
    click.echo(f"{classes} -> {result.path} ({result.width}x{result.height} px)")
