"""Latency of ``geoseg serve`` on the sample scene, side by side with ``predict`` of the same area.

Starts ``geoseg serve`` (bundled model, 127.0.0.1, a free port, torch threads as given) and times, from the
moment it listens (the model loaded):
- the first class tile at the scene's centre, asked as QGIS asks (the request waits for its regions);
- every class tile and every image tile over the scene at three zooms once its regions are cached (one
  request after the other: tiles/s of one client);
then, in this process with the same threads, batch size and device, ``predict`` of the regions that first
tile needed (on the sample scene: the whole scene, one region) and prints the ratio.

    .venv/bin/python benchmarks/serve.py                 # about 3 min on a loaded 2-core CPU
    .venv/bin/python benchmarks/serve.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import morecantile
import torch
from serve_screenshot import MODEL, SCENE, get_json, start_server, stop_server

TMS = morecantile.tms.get("WebMercatorQuad")


def fetch(url: str) -> float:
    """Seconds to get ``url`` (a 200)."""
    begin = time.perf_counter()
    with urllib.request.urlopen(url, timeout=1800) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
    return time.perf_counter() - begin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server and of predict")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="geoseg-serve-bench-") as folder:
        work = Path(folder)
        process, address = start_server(
            [str(args.scene.resolve())], ["-m", str(args.model), "-o", str(work / "classes.tif")], work
        )
        try:
            layer = next(e for e in get_json(f"{address}api/layers")["layers"] if e["kind"] == "classes")
            west, south, east, north = layer["bounds"]
            native = layer["native_zoom"]
            centre = TMS.tile((west + east) / 2, (south + north) / 2, native)
            first = fetch(f"{address}tiles/classes/{native}/{centre.x}/{centre.y}.png")
            progress = get_json(f"{address}api/progress")["layers"]["classes"]
            timings = {}
            for kind in ("classes", "image"):
                seconds, count = 0.0, 0
                for z in (native - 1, native, native + 1):
                    for tile in TMS.tiles(west, south, east, north, [z]):
                        seconds += fetch(f"{address}tiles/{kind}/{z}/{tile.x}/{tile.y}.png")
                        count += 1
                timings[kind] = (count, seconds)
            after = get_json(f"{address}api/progress")["layers"]["classes"]
        finally:
            code, _ = stop_server(process)
        print(f"scene {args.scene.name}, {args.threads} torch threads, server exit {code} on Ctrl-C")
        print(
            f"first class tile (z{native}, centre): {first:.1f} s; it computed {progress['computed']} of "
            f"{progress['regions']} regions"
        )
        for kind, (count, seconds) in timings.items():
            print(f"cached {kind} tiles: {count} in {seconds:.2f} s = {count / seconds:.1f} tiles/s")
        if after["computed"] != progress["computed"]:
            print(f"(the cached pass computed {after['computed'] - progress['computed']} more regions)")
        predict_seconds = predict_regions(args, progress["computed"] == progress["regions"], work)
        if predict_seconds is not None:
            print(f"predict of the same area: {predict_seconds:.1f} s")
            print(f"first tile / predict: {first / predict_seconds:.2f}x")
    return 0 if code == 130 else 1


def predict_regions(args: argparse.Namespace, whole: bool, work: Path) -> float | None:
    """Seconds of ``predict`` of the whole scene (the first tile's area when it needed every region), the
    network loaded beforehand as the server loads it before it listens."""
    from geoseg.device import resolve_device
    from geoseg.inference.acceleration import resolve_batch_size
    from geoseg.inference.scene import predict_scene
    from geoseg.model.loading import load_model

    if not whole:
        print("the first tile needed only some regions: compare with the whole scene by hand")
        return None
    network, card = load_model(args.model, None, None)
    device = resolve_device("auto")
    batch = resolve_batch_size("auto", device, card.tile_size)
    begin = time.perf_counter()
    predict_scene(network, card, args.scene, work / "predicted.tif", batch_size=batch, device=device)
    return time.perf_counter() - begin


if __name__ == "__main__":
    sys.exit(main())
