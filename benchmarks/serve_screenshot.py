"""``geoseg serve`` in a real browser: headless Chromium screenshots the page, and each screen pixel's colour
is checked against the class raster ``predict`` writes for the same place.

Starts ``geoseg serve`` on the sample scene (bundled model, 127.0.0.1, a free port, the regions into a work
folder of its own), opens the page at a view that shows the whole scene (``#zoom/lat/lon``), and takes two
screenshots with Chromium (Debian's ``chromium``; no other dependency): the first while the regions the page
asked for are computed, the second once they are finished. Ctrl-C (SIGINT) then stops the server, which must
exit 130 naming the kept work folder; ``geoseg predict --resume`` into the same output then computes nothing
and writes the batch class raster. Every screen pixel of the scene (outside the page's controls) is the
classes layer (opacity 0.6) over the image: its class is the legend colour whose blend with the scene's
pixel is nearest, and it must be the raster's class there.

    .venv/bin/python benchmarks/serve_screenshot.py                       # about 4 min on a 2-core CPU
    .venv/bin/python benchmarks/serve_screenshot.py --out docs/images/serve.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.io import MemoryFile

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "sample_data" / "netherlands_0p25m_epsg28992.tif"
MODEL = REPO / "models" / "manet_r50_loveda_demo.safetensors"
OPACITY = 0.6  # the classes layer's opacity when the page opens (index.html)
EARTH = 2 * math.pi * 6378137  # Web Mercator's extent in metres: 256 * 2**z pixels at zoom z
CONTROLS = 300  # px at the page's right edge (layers, progress, legend) left out of the check


def browser() -> str | None:
    """The Chromium on PATH, or None."""
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def start_server(inputs: list[str], extra: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """``geoseg serve`` in a subprocess on 127.0.0.1 and a free port; returns it and the page's address."""
    command = [sys.executable, "-m", "geoseg.cli.main", "serve", *inputs, "--port", "0", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    if "http://" not in line:
        process.kill()
        raise RuntimeError(f"geoseg serve did not start: {line}{process.stderr.read()}")
    return process, line.split()[2]


def stop_server(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C the server; its exit code and what it printed after the address."""
    process.send_signal(signal.SIGINT)
    try:
        rest = process.stderr.read()
        return process.wait(timeout=60), rest
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def view_of(bounds: list[float], width: int, height: int) -> tuple[int, float, float]:
    """The page's ``#zoom/lat/lon``: the deepest zoom at which ``bounds`` (lon/lat) fill at most 95 % of
    the window, centred."""
    to_merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    (x0, x1), (y0, y1) = to_merc.transform([bounds[0], bounds[2]], [bounds[1], bounds[3]])
    z = max(
        z
        for z in range(25)
        if (x1 - x0) * 256 * 2**z / EARTH <= 0.95 * width and (y1 - y0) * 256 * 2**z / EARTH <= 0.95 * height
    )
    lon, lat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(
        (x0 + x1) / 2, (y0 + y1) / 2
    )
    return z, lat, lon


def screenshot(url: str, path: Path, width: int, height: int, budget_ms: int = 4000) -> None:
    """Headless Chromium's screenshot of ``url`` after ``budget_ms`` of the page's (virtual) time."""
    # Chromium's helper processes (renderer, crash handler) outlive the browser and write to its profile:
    # they run in a session of their own and are all stopped before the profile is removed.
    with tempfile.TemporaryDirectory(prefix="geoseg-chromium-") as profile:
        process = subprocess.Popen(
            [
                browser() or "chromium",
                "--headless",
                "--no-sandbox",  # root in containers
                "--disable-gpu",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={path}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        watchdog = threading.Timer(300, process.kill)  # a Chromium that hangs before writing: stopped
        watchdog.start()
        try:
            # Chromium sometimes hangs on its way out after writing the file: stop it once it is written.
            for line in process.stderr:
                if "written to file" in line:
                    break
            else:
                raise RuntimeError(f"chromium wrote no screenshot (exit {process.wait()})")
        finally:
            watchdog.cancel()
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _stop_session(process.pid)


def _stop_session(leader: int, timeout_s: float = 10) -> None:
    """SIGKILL every process left in the session ``leader`` started, and wait until none is left."""
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGKILL)
        while time.monotonic() < deadline:
            os.killpg(leader, 0)  # ProcessLookupError once the last one is gone
            time.sleep(0.05)


def wait_for_regions(address: str, timeout_s: float) -> dict:
    """Poll the server's progress until nothing is queued or computing; the last progress."""
    deadline = time.monotonic() + timeout_s
    while True:
        progress = get_json(f"{address}api/progress")
        if progress["running"] is None and progress["queued"] == 0:
            return progress
        if time.monotonic() > deadline:
            raise TimeoutError(f"regions still computing after {timeout_s:.0f} s: {progress}")
        time.sleep(1)


def read_rgb(png: Path) -> np.ndarray:
    with MemoryFile(png.read_bytes()) as memory, memory.open() as dataset:
        return dataset.read()[:3].astype(np.int32)


def screen_pixels(
    z: int, lat: float, lon: float, width: int, height: int, crs, transform
) -> tuple[np.ndarray, np.ndarray]:
    """Scene row and column under each screen pixel's centre of a Leaflet map of ``width`` x ``height`` at
    ``z`` centred on ``lat``/``lon`` (its pixel origin is the centre's rounded to whole pixels)."""
    size = 256 * 2**z
    cx, cy = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    centre_x, centre_y = (cx / EARTH + 0.5) * size, (0.5 - cy / EARTH) * size
    origin_x, origin_y = math.floor(centre_x - width / 2 + 0.5), math.floor(centre_y - height / 2 + 0.5)
    px, py = np.meshgrid(origin_x + np.arange(width) + 0.5, origin_y + np.arange(height) + 0.5)
    mx, my = (px / size - 0.5) * EARTH, (0.5 - py / size) * EARTH
    ex, ny = Transformer.from_crs("EPSG:3857", crs, always_xy=True).transform(mx, my)
    col, row = ~transform * (ex, ny)
    return np.floor(row).astype(int), np.floor(col).astype(int)


def check_colours(
    png: Path, view: tuple[int, float, float], scene: Path, classes: Path, colors: list[tuple[int, int, int]]
) -> dict:
    """Each screen pixel over the scene (right-hand controls left out) read as the class whose colour,
    blended over the scene's pixel, is nearest; compared with the class raster there."""
    rgb = read_rgb(png)
    _, height, width = rgb.shape
    with rasterio.open(classes) as dataset:
        raster, crs, transform = dataset.read(1), dataset.crs, dataset.transform
    with rasterio.open(scene) as dataset:
        image = dataset.read([1, 2, 3]).astype(np.int32)
    row, col = screen_pixels(*view, width, height, crs, transform)
    inside = (row >= 0) & (row < raster.shape[0]) & (col >= 0) & (col < raster.shape[1])
    inside[:, width - CONTROLS :] = False
    inside[inside] = raster[row[inside], col[inside]] < len(colors)  # no-data: nothing drawn
    r, c = row[inside], col[inside]
    truth = raster[r, c]
    under = image[:, r, c].T  # (n, 3)
    shown = rgb[:, inside].T
    palette = np.array(colors, dtype=np.float64)
    blends = OPACITY * palette[None, :, :] + (1 - OPACITY) * under[:, None, :]  # (n, classes, 3)
    read = np.abs(blends - shown[:, None, :]).sum(axis=2).argmin(axis=1)
    count = len(colors)
    border = np.zeros(raster.shape, dtype=bool)  # pixels with another class among their 8 neighbours
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = raster[max(dy, 0) :, max(dx, 0) : raster.shape[1] + min(dx, 0)]
        b = raster[: raster.shape[0] - dy, max(-dx, 0) : raster.shape[1] - max(dx, 0)]
        differ = a != b
        border[max(dy, 0) :, max(dx, 0) : raster.shape[1] + min(dx, 0)] |= differ
        border[: raster.shape[0] - dy, max(-dx, 0) : raster.shape[1] - max(dx, 0)] |= differ
    interior = ~border[r, c]
    return {
        "pixels": int(inside.sum()),
        "agreement": float((read == truth).mean()),
        "agreement_off_borders": float((read == truth)[interior].mean()),
        "screen_histogram": np.bincount(read, minlength=count).tolist(),
        "raster_histogram": np.bincount(truth, minlength=count).tolist(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--out", type=Path, default=Path("serve.png"), help="the final screenshot")
    parser.add_argument("--window", default="1100x800", help="browser window WIDTHxHEIGHT")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--min-agreement", type=float, default=0.99)
    args = parser.parse_args()
    if browser() is None:
        print("no chromium on PATH: apt-get install chromium", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.window.split("x"))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="geoseg-serve-shot-") as folder:
        work = Path(folder)
        output = work / "classes.tif"
        start = time.monotonic()
        process, address = start_server(
            [str(args.scene.resolve())], ["-m", str(args.model), "-o", str(output)], work
        )
        try:
            layer = next(
                entry for entry in get_json(f"{address}api/layers")["layers"] if entry["kind"] == "classes"
            )
            view = view_of(layer["bounds"], width, height)
            page = f"{address}#{view[0]}/{view[1]:.9f}/{view[2]:.9f}"
            print(f"page {page}")
            during = args.out.with_name(args.out.stem + ".computing.png")
            screenshot(page, during, width, height)
            print(f"screenshot while computing: {during} ({get_json(f'{address}api/progress')})")
            progress = wait_for_regions(address, timeout_s=1800)
            print(f"regions finished after {time.monotonic() - start:.0f} s: {progress['layers']}")
            screenshot(page, args.out, width, height)
        finally:
            code, said = stop_server(process)
        print(f"Ctrl-C: exit {code}; said {said.strip()!r}")
        leftovers = sorted(p.name for p in work.iterdir())
        print(f"left in the folder: {leftovers}")
        begin = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "geoseg.cli.main", "predict", str(args.scene), "-m", str(args.model)]
            + ["-o", str(output), "--resume"],
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        print(f"predict --resume after serving: {time.monotonic() - begin:.1f} s (computes nothing)")
        colors = [tuple(int(e["color"][i : i + 2], 16) for i in (1, 3, 5)) for e in layer["legend"]]
        found = check_colours(args.out, view, args.scene, output, colors)
    names = [e["name"] for e in layer["legend"]]
    print(
        f"screen pixels checked: {found['pixels']}; read as the raster's class: {found['agreement']:.4%} "
        f"({found['agreement_off_borders']:.4%} away from class borders)"
    )
    for name, seen, truth in zip(names, found["screen_histogram"], found["raster_histogram"], strict=True):
        print(f"  {name:14s} screen {seen:8d}   raster {truth:8d}")
    print(f"screenshot: {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    ok = code == 130 and found["agreement"] >= args.min_agreement
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
