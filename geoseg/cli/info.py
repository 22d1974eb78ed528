"""``geoseg info``: describe a checkpoint (card, parameters, backbone) or a raster (grid, bands, masks)."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import emit_json, json_option, overwrite_option


@click.command(short_help="Describe a checkpoint or a raster.")
@click.argument("path")
@json_option
@click.option(
    "--stac",
    is_flag=True,
    help="Print the model (checkpoint, .onnx or .pt2 export) as a STAC Item with the Machine Learning "
    "Model (MLM) extension (JSON); its href is the model's absolute file:// URI.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --stac: write the Item to this file instead, its href relative to it.",
)
@overwrite_option
def info(path: str, as_json: bool, stac: bool, output: str | None, overwrite: bool) -> None:
    """Describe PATH: a checkpoint (its model card, parameter count, backbone) or a raster (size, CRS,
    transform, bands, dtype, nodata/mask, block layout). GDAL paths such as /vsizip/ work.

    \b
    geoseg info models/manet_r50_loveda_demo.safetensors
    geoseg info scene.tif --json
    geoseg info models/manet_r50_loveda_demo.safetensors --stac -o manet.item.json
    """
    if output is not None and not stac:
        raise click.UsageError("-o/--output writes the STAC Item: add --stac")
    if stac:
        from geoseg.api import checkpoint_stac_item

        if output is None:
            click.echo(json.dumps(checkpoint_stac_item(path), indent=2))
            return
        from geoseg.api import write_stac_item

        item = write_stac_item(path, output, overwrite=overwrite)
        click.echo(f"Wrote {output}: model href {item['assets']['model']['href']}")
        return
    from geoseg.api import describe

    description = describe(path)
    if as_json:
        emit_json(description)
        return
    _render(description)


def _render(description: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=description.get("path"), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in description.items():
        if key in ("path", "card", "bands"):
            continue
        table.add_row(key, _text(value))
    card = description.get("card")
    if card:
        for key, value in card.items():
            if key == "classes":
                value = "\n".join(f"{i}: {c['name']} {tuple(c['color'])}" for i, c in enumerate(value))
            table.add_row(f"card.{key}", _text(value))
    for band in description.get("bands", []):
        table.add_row(f"band {band['index']}", _text({k: v for k, v in band.items() if k != "index"}))
    console.print(table)


def _text(value, depth: int = 0) -> str:
    """Readable one-cell text; nested records are shortened (``--json`` has everything)."""
    if isinstance(value, dict):
        if depth >= 2:
            return "{…}"
        separator = "\n" if depth == 0 and any(isinstance(v, dict) for v in value.values()) else ", "
        return separator.join(f"{k}={_text(v, depth + 1)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple) and any(isinstance(v, dict) for v in value):
        return f"[{len(value)} records]"
    if isinstance(value, list | tuple) and depth >= 1 and len(value) > 8:
        return f"[{len(value)} items]"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return "-" if value is None or value == "" else str(value)
