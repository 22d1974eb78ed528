"""Peak memory and time of ``geoseg quicklook`` on a 2,000² and a 20,000² class raster, side by side.

The rasters are written as ``geoseg predict`` writes them (tiled, nodata 255, colour table and names, then
COG with mode overviews), block by block so the generator stays bounded. Each quick-look runs in a fresh
subprocess that reports its own peak RSS (``VmHWM``), wall and CPU time (CPU time is what a loaded machine
does not distort), under the CLI's GDAL settings. The
quick-look reads through the overviews, so the 20,000² raster (100× the pixels) should cost about the same.

    .venv/bin/python benchmarks/quicklook.py
    .venv/bin/python benchmarks/quicklook.py --sizes 1000 40000 --max-size 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

NAMES = ["building", "road", "tree", "low vegetation", "water", "bare soil"]
COLORS = [(230, 25, 75), (255, 225, 25), (60, 180, 75), (145, 30, 180), (0, 130, 200), (170, 110, 40)]


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started (``VmHWM``; ``ru_maxrss`` would also count the
    parent's memory at the fork, which on Linux survives the ``exec`` of the child)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere (kB on most systems)


def write_class_raster(path: Path, size: int, cell: int = 64, seed: int = 0) -> None:
    """Random classes in ``cell``-pixel squares, a no-data band along the top, written block by block."""
    from geoseg.raster.classes import NODATA_CLASS, write_class_metadata
    from geoseg.raster.writing import open_tiled, tiled_profile, to_cog

    rng = np.random.default_rng(seed)
    georef = {"crs": rasterio.CRS.from_epsg(32633), "transform": Affine(0.1, 0, 5e5, 0, -0.1, 6e6)}
    tiled = path.with_name("tiled_" + path.name)
    with open_tiled(tiled, tiled_profile(size, size, 1, NODATA_CLASS, georef)) as dst:
        write_class_metadata(dst, NAMES, COLORS)
        for _, window in dst.block_windows(1):
            h, w = int(window.height), int(window.width)
            cells = rng.integers(0, len(NAMES), (h // cell + 1, w // cell + 1), dtype=np.uint8)
            block = np.kron(cells, np.ones((cell, cell), np.uint8))[:h, :w]
            block[: max(0, size // 10 - int(window.row_off))] = NODATA_CLASS
            dst.write(block, 1, window=window)
    to_cog(tiled, path)
    tiled.unlink()


def child(classes: str, output: str, max_size: int) -> None:
    """One quick-look; prints peak RSS after the imports and at the end, and the time, as JSON."""
    import matplotlib.backends.backend_agg  # noqa: F401  (imported up front: the baseline includes them)
    import matplotlib.figure  # noqa: F401

    from geoseg.plots.quicklook import quicklook

    before = peak_rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    with rasterio.Env(GDAL_CACHEMAX=256, GDAL_NUM_THREADS="ALL_CPUS"):
        quicklook(classes, output, max_size=max_size)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"baseline_mb": before, "peak_mb": peak_rss_mb(), "seconds": seconds, "cpu": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--max-size", type=int, default=1600)
    parser.add_argument("--repeat", type=int, default=3, help="quick-looks per raster; the fastest is kept")
    parser.add_argument("--child", nargs=2, metavar=("CLASSES", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.max_size)
        return

    reports = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            classes = Path(folder) / f"classes_{size}.tif"
            start = time.perf_counter()
            write_class_raster(classes, size)
            generated = time.perf_counter() - start
            runs = []
            for attempt in range(args.repeat):
                output = Path(folder) / f"quicklook_{size}_{attempt}.png"
                command = [sys.executable, __file__, "--child", str(classes), str(output)]
                command += ["--max-size", str(args.max_size)]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            report = min(runs, key=lambda r: r["seconds"])
            report["cpu"] = min(r["cpu"] for r in runs)
            report["peak_mb"] = max(r["peak_mb"] for r in runs)
            reports[size] = report
            kilobytes = classes.stat().st_size / 1e3
            print(
                f"{size:>6}² class raster ({kilobytes:,.0f} kB COG, written in {generated:.1f} s): "
                f"quick-look in {report['seconds']:.2f} s ({report['cpu']:.2f} s CPU), "
                f"peak RSS {report['peak_mb']:.1f} MB "
                f"(after imports {report['baseline_mb']:.1f} MB)"
            )
            classes.unlink()
    small, large = (reports[s] for s in args.sizes)
    pixels = (args.sizes[1] / args.sizes[0]) ** 2
    memory, seconds = large["peak_mb"] / small["peak_mb"], large["seconds"] / small["seconds"]
    print(
        f"{args.sizes[1]}² / {args.sizes[0]}² ({pixels:.0f}x the pixels): peak RSS x{memory:.2f}, "
        f"time x{seconds:.2f}, CPU time x{large['cpu'] / small['cpu']:.2f}"
    )


if __name__ == "__main__":
    main()
