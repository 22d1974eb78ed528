"""``geoseg vectorize``: a class raster to polygons, one per connected region, at any raster size."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    NameListType,
    emit_json,
    json_option,
    overwrite_option,
    progress_reporter,
    quiet_option,
    styles_option,
)


@click.command(short_help="Class raster to polygons (GPKG, FlatGeobuf, GeoJSON, GeoParquet, Shapefile).")
@click.argument("classes_path", metavar="CLASSES", type=click.Path(dir_okay=False))
@click.option(
    "--output",
    "-o",
    "output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file; the suffix picks the format: .gpkg, .fgb, .geojson, .parquet or .shp.",
)
@click.option(
    "--classes",
    type=NameListType(),
    default=None,
    help="Keep only these classes (names stored in the raster, or ids), e.g. building,tree or 2,4.",
)
@click.option(
    "--min-area",
    type=click.FloatRange(min=0),
    default=None,
    metavar="M2",
    help="Merge regions under this area (square metres on the ellipsoid, in any CRS) into their neighbours "
    "first, gap-free: no polygon is smaller, also after --simplify.",
)
@click.option(
    "--min-pixels",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="The same as --min-area, in pixels.",
)
@click.option(
    "--simplify",
    type=click.FloatRange(min=0),
    default=None,
    metavar="METRES",
    help="Simplify shared boundaries once for both neighbours; the tolerance is in metres on the ground "
    "(about the largest shift), whatever the CRS's unit. No gaps or overlaps appear.",
)
@click.option(
    "--connectivity",
    type=click.Choice(["4", "8"]),
    default="4",
    show_default=True,
    help="Pixels touching by an edge (4) or also by a corner (8) form one region.",
)
@click.option(
    "--split-polygons-at",
    "split",
    type=click.IntRange(min=0),
    default=None,
    metavar="PX",
    help="Cut regions at the lines of a pixel-aligned grid of PX pixels, so memory stays flat even when "
    "one region spans the scene; 0 never cuts (memory then grows with the raster). [default: 4096]",
)
@click.option(
    "--layer", default=None, help="Layer name (GeoPackage, Shapefile...). Default: the output's stem."
)
@click.option(
    "--keep-crs",
    is_flag=True,
    help="GeoJSON: keep the raster's CRS instead of WGS84 longitude/latitude (RFC 7946). Every other format "
    "keeps it anyway (the flag changes nothing there).",
)
@styles_option
@overwrite_option
@json_option
@quiet_option
def vectorize(
    classes_path: str,
    output: str,
    classes: list[str] | None,
    min_area: float | None,
    min_pixels: int | None,
    simplify: float | None,
    connectivity: str,
    split: int | None,
    layer: str | None,
    keep_crs: bool,
    styles: bool,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Turn CLASSES (a class raster from geoseg predict, or any single-band integer raster) into polygons.

    One feature per connected region, with class_id, class_name and area in square metres (true areas on
    the CRS's ellipsoid, in any CRS). Regions larger than the split grid are cut at its lines (one polygon
    per grid cell); nodata gives no polygon. A raster placed only by GCPs or RPCs is refused: warp it first.
    Every format keeps the raster's CRS, except GeoJSON (WGS84 longitude/latitude unless --keep-crs).

    \b
    geoseg vectorize classes.tif -o polygons.gpkg
    geoseg vectorize classes.tif -o buildings.fgb --classes building --min-area 2 --simplify 0.25
    geoseg vectorize classes.tif -o map.geojson --min-pixels 20 --connectivity 8 --json
    """
    from geoseg.api import vectorize as run_vectorize
    from geoseg.vector.vectorize import DEFAULT_SPLIT

    if min_area is not None and min_pixels is not None:
        raise click.UsageError("give either --min-area or --min-pixels, not both")
    callback, close = progress_reporter("vectorizing", quiet or as_json)
    try:
        result = run_vectorize(
            classes_path,
            output,
            classes=classes,
            min_area=min_area,
            min_pixels=min_pixels,
            simplify=simplify,
            connectivity=int(connectivity),
            split_polygons_at=DEFAULT_SPLIT if split is None else split,
            layer=layer,
            keep_crs=keep_crs,
            styles=styles,
            overwrite=overwrite,
            progress=callback,
        )
    finally:
        close()
    if as_json:
        emit_json(result.to_dict())
        return
    if not quiet:
        total = sum(result.polygons.values())
        detail = ", ".join(f"{name} {count}" for name, count in result.polygons.items())
        detail = f" ({detail})" if detail else ""
        click.echo(f"{result.output}: {total} polygons{detail} in {result.seconds:.1f} s", err=True)
