"""The web application: tiles, a WMTS capabilities document, JSON for the page, and the page itself.

Every URL maps onto a fixed table (layer names, static file names): no part of a URL is ever used as a
file path, so nothing outside the served inputs can be read through it.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from geoseg.serve.layers import ClassesLayer, ImageLayer, Layers
from geoseg.serve.regions import Stopped, Ticket
from geoseg.serve.tiles import MAX_ZOOM, empty_tile, wmts_capabilities

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
WAIT_POLL_S = 0.25
NO_STORE = {"Cache-Control": "no-store"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page and the vendored map library, read once from the package: name -> (bytes, media type)."""
    files = {}
    root = resources.files("geoseg.serve") / "static"

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            else:
                suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
                files[prefix + entry.name] = (
                    entry.read_bytes(),
                    STATIC_TYPES.get(suffix, "application/octet-stream"),
                )

    walk(root, "")
    return files


def create_app(layers: Layers) -> Starlette:
    """The ASGI application over opened ``layers`` (the caller closes them)."""
    static = _static_files()

    async def page(request: Request) -> Response:
        body, media = static["index.html"]
        return Response(body, media_type=media)

    async def static_file(request: Request) -> Response:
        found = static.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404)
        return Response(found[0], media_type=found[1])

    async def describe(request: Request) -> Response:
        return JSONResponse({"layers": [layer.describe() for layer in layers.layers.values()]})

    async def progress(request: Request) -> Response:
        running = layers.queue.status() if layers.queue is not None else {"running": None, "queued": 0}
        per_layer = {
            name: layer.progress() for name, layer in layers.layers.items() if isinstance(layer, ClassesLayer)
        }
        return JSONResponse({**running, "layers": per_layer}, headers=NO_STORE)

    async def pixel(request: Request) -> Response:
        layer = layers.layers.get(request.path_params["layer"])
        if not isinstance(layer, ClassesLayer):
            return JSONResponse({"error": "no such classes layer"}, status_code=404)
        try:
            lon, lat = float(request.query_params["lon"]), float(request.query_params["lat"])
        except (KeyError, ValueError):
            return JSONResponse({"error": "give lon and lat as numbers"}, status_code=400)
        return JSONResponse(await run_in_threadpool(layer.pixel, lon, lat), headers=NO_STORE)

    async def wmts(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        listed = [(name, layer.title, layer.describe()["bounds"]) for name, layer in layers.layers.items()]
        return Response(wmts_capabilities(base, listed, MAX_ZOOM), media_type="application/xml")

    async def tile(request: Request) -> Response:
        p = request.path_params
        layer = layers.layers.get(p["layer"])
        z, x, y = p["z"], p["x"], p["y"]
        if layer is None or z > MAX_ZOOM or not (0 <= x < 2**z and 0 <= y < 2**z):
            return Response("not found", status_code=404)
        footprint = layer.footprint(z, x, y)
        if footprint is None:
            return Response(empty_tile(), media_type="image/png")
        if isinstance(layer, ImageLayer):
            try:
                return Response(await run_in_threadpool(layer.render, z, x, y), media_type="image/png")
            except asyncio.CancelledError:
                return Response("the server is stopping", status_code=503)
        headers = {}
        # The page asks with wait=0 and its view number: it redraws when regions finish, and a newer view
        # makes this one's requests stale. Other clients (QGIS) wait for the regions of the tile.
        view = request.query_params.get("view")
        ticket = Ticket(view=int(view) if view and view.isdigit() else None)
        futures = layers.want(layer, footprint, ticket)
        if futures and request.query_params.get("wait") == "0":
            headers = NO_STORE  # incomplete for now
        elif futures:
            waiting = [asyncio.wrap_future(f) for f in futures]
            try:
                while not all(w.done() for w in waiting):
                    await asyncio.wait(waiting, timeout=WAIT_POLL_S)
                    if await request.is_disconnected():
                        ticket.left = True
                        return Response(status_code=499)
                for w in waiting:
                    w.result()
            except (Stopped, asyncio.CancelledError):
                return Response("the server is stopping", status_code=503)
        try:
            png = await run_in_threadpool(layer.render, z, x, y, footprint)
        except asyncio.CancelledError:  # the server stopped while rendering: no traceback on Ctrl-C
            return Response("the server is stopping", status_code=503)
        return Response(png, media_type="image/png", headers=headers)

    routes = [
        Route("/", page),
        Route("/static/{name:path}", static_file),
        Route("/api/layers", describe),
        Route("/api/progress", progress),
        Route("/api/pixel/{layer}", pixel),
        Route("/wmts/WMTSCapabilities.xml", wmts),
        Route("/tiles/{layer}/{z:int}/{x:int}/{y:int}.png", tile),
    ]
    return Starlette(routes=routes)
