"""``geoseg serve``: look at a model's map in a browser or in QGIS while it is computed, tile by tile."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    bands_option,
    batch_size_option,
    card_option,
    check_tiling,
    device_option,
    engine_option,
    model_option,
    overlap_option,
    preset_option,
    scale_option,
    serve_precision_option,
    tile_option,
    tta_option,
)


@click.command(short_help="Show a scene and its classes as web map tiles, computed on demand.")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    help="The class raster a later 'geoseg predict INPUT -o OUTPUT --resume' writes (one per input): its "
    "work folder .OUTPUT.geoseg-work keeps the regions computed here. Default: <stem>.classes.tif here.",
)
@model_option
@preset_option
@card_option
@tile_option
@overlap_option
@batch_size_option
@device_option
@serve_precision_option
@engine_option
@tta_option
@bands_option
@scale_option
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port."
)
@click.option(
    "--host",
    default=None,
    help="Address to listen on. Default 127.0.0.1 (this machine only); another one opens the map (and the "
    "scene) to the network.",
)
def serve(
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    model_path: str | None,
    preset: str | None,
    card_path: str | None,
    tile: int | None,
    overlap: int | None,
    batch_size: int | str,
    device: str,
    precision: str,
    engine: str,
    tta: str,
    bands: list[int] | None,
    scale,
    port: int,
    host: str | None,
) -> None:
    """Serve INPUT scenes (path, URL or STAC Item, read as predict reads them) as web map tiles: the image,
    and the model's classes computed on demand region by region, exactly as predict computes them. A class
    raster (predict's output) is served as it is, without a model. Open the printed address in a browser,
    or add its WMTS or XYZ URL in QGIS. Ctrl-C stops; the regions computed stay in the work folder, so
    'geoseg predict INPUT -o OUTPUT --resume' computes only the rest.

    \b
    geoseg serve scene.tif
    geoseg serve scene.tif -m model.safetensors --port 8080
    geoseg serve classes.tif
    geoseg serve a.tif b.tif
    """
    from geoseg.serve.server import bind, require_serve_extra

    if preset and card_path:
        raise click.UsageError("give either --preset or --card, not both")
    check_tiling(tile, overlap)
    require_serve_extra()
    from geoseg.serve.layers import open_layers
    from geoseg.serve.server import serve as run_server

    if host is None:
        host = "127.0.0.1"
    elif host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"Warning: listening on {host}: anyone who reaches it can see the map and the scene", err=True
        )
    layers = open_layers(
        list(inputs),
        model=model_path,
        preset=preset,
        card=card_path,
        outputs=list(outputs) or None,
        tile=tile,
        overlap=overlap,
        bands=bands,
        scale=scale,
        tta=tta,
        device=device,
        precision=precision,
        batch_size=batch_size,
        engine=engine,
    )
    try:
        sock = bind(host, port)
    except BaseException:
        layers.close()
        raise
    address = sock.getsockname()
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    url = f"http://{shown}:{address[1]}/"

    def ready() -> None:
        click.echo(f"geoseg serve: {url} (WMTS: {url}wmts/WMTSCapabilities.xml); Ctrl-C stops", err=True)

    interrupted = False
    try:
        run_server(layers, sock, ready)
    except KeyboardInterrupt:  # Ctrl-C is how a server stops: this line, not the group's "interrupted"
        interrupted = True
    finally:  # also when SIGTERM/SIGHUP end it (the group then adds its "terminated by" line)
        for folder in layers.work_folders():
            click.echo(
                f"geoseg serve: stopped; computed regions kept in {folder.resolve()} (predict --resume with "
                "the same -o computes only the rest; delete the folder to drop them)",
                err=True,
            )
    if interrupted:
        raise click.exceptions.Exit(130)  # predict's exit code for Ctrl-C
