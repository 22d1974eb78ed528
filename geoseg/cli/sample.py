"""``geoseg sample``: a stratified random sample of a class map, for a person to label in the GIS."""

from __future__ import annotations

import click

from geoseg.cli.options import card_option, emit_json, json_option, overwrite_option, preset_option


@click.command(short_help="Stratified random sample points of a class map, to label in QGIS.")
@click.argument("classes", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Points (.gpkg, .fgb, .geojson, .shp).",
)
@click.option("-n", "per_class", type=click.IntRange(min=0), default=50, show_default=True,
              help="Units per mapped class.")  # fmt: skip
@click.option(
    "--allocation",
    default=None,
    help="Units of some classes instead of -n, e.g. 'water=100,building=50' (0 leaves a class out).",
)
@click.option(
    "--seed", type=int, default=None, help="Seed of the random draw: the same seed, the same points."
)
@preset_option
@card_option
@overwrite_option
@json_option
def sample(
    classes: str,
    output: str,
    per_class: int,
    allocation: str | None,
    seed: int | None,
    preset: str | None,
    card_path: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Draw a stratified random sample of CLASSES (a class raster): for every class on the map, -n pixels
    at random among those mapped as it, written as points at the pixel centres with the map class
    (map_class) and an empty reference column. Fill in the reference class of each point in QGIS (from the
    imagery or the field), then give the file to geoseg evaluate: the map classes are the strata, and it
    estimates each class's area with a 95 % interval and the accuracies (Olofsson et al. 2014).

    \b
    geoseg sample classes.tif -n 50 -o samples.gpkg --seed 1
    geoseg sample classes.tif -n 50 --allocation 'water=100,building=75' -o samples.gpkg
    geoseg evaluate classes.tif samples.gpkg --class-field reference
    """
    from geoseg.model.presets import resolve_card
    from geoseg.sampling import draw_sample, parse_allocation

    if preset and card_path:
        raise click.UsageError("give either --preset or --card, not both")
    card = resolve_card(preset, card_path)
    result = draw_sample(
        classes,
        output,
        per_class=per_class,
        allocation=parse_allocation(allocation),
        seed=seed,
        class_names=card.class_names if card is not None else None,
        overwrite=overwrite,
    )
    if as_json:
        emit_json(result.to_dict())
        return
    total = sum(result.units.values())
    drawn = ", ".join(f"{name} {count}" for name, count in result.units.items())
    click.echo(f"{total:,} sample points ({drawn}): {output}")
    click.echo("fill in their reference column, then: geoseg evaluate CLASSES SAMPLE --class-field reference")
