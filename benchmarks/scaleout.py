"""Regions beyond one stream, side by side in one run: border overhead, 2 workers vs 1, memory, resume.

1. Tiles computed / grid tiles for 1, 2 and 4 workers and for --resume, from the region plan of a 6,144²
   scene at tile 256 / overlap 32 (the issue's case; no border tile is skipped there), and measured on the
   benchmark scene.
2. Wall time of 2 workers (a Dask LocalCluster, cores / 2 threads each) / 1 worker (this process, all cores)
   at equal total threads, the regions only (cluster start-up reported apart).
3. Peak RSS per worker process.
4. --resume: a run SIGKILLed at 50 % of its tiles, then resumed: tiles and time of the resumed run over a
   whole run.
5. Memory with large no-data areas: a 24,000² and a 3,000² scene, both valid only in a 300² corner (target:
   ratio <= 1.25).

The network is a per-pixel 1x1 convolution (as in benchmarks/memory.py): the point is the plumbing. Every
prediction runs in a fresh subprocess that reports its own peak RSS.

    .venv/bin/python benchmarks/scaleout.py
    .venv/bin/python benchmarks/scaleout.py --size 6144 --tile 256 --overlap 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from scenes import write_blocky_scene


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def write_corner_scene(path: Path, size: int, corner: int = 300) -> None:
    """An RGB scene with nodata 0 everywhere but a ``corner``² valid square; unwritten blocks stay sparse."""
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype="uint8", nodata=0, tiled=True,
        blockxsize=512, blockysize=512, compress="DEFLATE", SPARSE_OK=True, BIGTIFF="IF_SAFER",
        crs="EPSG:32633", transform=Affine(0.25, 0, 5e5, 0, -0.25, 6e6),
    )  # fmt: skip
    data = np.random.default_rng(0).integers(1, 256, (3, corner, corner)).astype(np.uint8)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, window=((0, corner), (0, corner)))


def child(args: argparse.Namespace) -> None:
    """One prediction; prints seconds, tiles and peak RSS of this process and of each worker, as JSON."""
    import torch

    from geoseg.inference.executors import open_executor
    from geoseg.inference.options import PredictOptions
    from geoseg.inference.outputs import OutputPaths
    from geoseg.inference.plan import plan_scene
    from geoseg.inference.scene import run_scene
    from geoseg.inference.tasks import ModelSource
    from geoseg.model.loading import model_digest
    from geoseg.model.presets import preset_card

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    card = preset_card("potsdam")
    model = torch.nn.Conv2d(3, card.num_classes, 1).eval()
    source = ModelSource(model_digest(model), module=model)
    device = torch.device("cpu")
    plan = plan_scene(card, args.scene, tile=args.tile, overlap=args.overlap)

    def kill_at(done: int, total: int) -> None:
        if done >= args.kill_at * total:
            os.kill(os.getpid(), signal.SIGKILL)

    start = time.perf_counter()
    executor = open_executor(model, source, device, args.workers)
    started = time.perf_counter() - start
    try:
        start = time.perf_counter()
        with rasterio.Env(GDAL_CACHEMAX=256):
            result = run_scene(
                model, card, plan, OutputPaths(Path(args.output)),
                PredictOptions(batch_size=4, device=device, resume=args.resume),
                progress=kill_at if args.kill_at else None, executor=executor, source=source,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        workers = [] if args.workers == 1 else sorted(executor.client.run(peak_rss_mb).values())
    finally:
        executor.close()
    report = {
        "seconds": seconds,
        "startup": started,
        "tiles": result.tiles,
        "grid_tiles": plan.grid.num_tiles,
    }
    print(json.dumps({**report, "peak_mb": peak_rss_mb(), "worker_peaks_mb": workers}))


def run_child(scene: Path, output: Path, args: argparse.Namespace, **options) -> dict | None:
    command = [sys.executable, __file__, "--child", str(scene), str(output)]
    settings = {"tile": args.tile, "overlap": args.overlap, "workers": 1, "threads": args.threads, **options}
    for name, value in settings.items():
        if value is True:
            command.append(f"--{name.replace('_', '-')}")
        elif value is not False:
            command += [f"--{name.replace('_', '-')}", str(value)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode == -signal.SIGKILL:
        return None
    if run.returncode:
        sys.exit(f"child failed: {' '.join(command)}\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def planned_overhead() -> str:
    from geoseg.inference.grid import TileGrid
    from geoseg.inference.plan import plan_regions

    grid = TileGrid(6144, 6144, 256, 32)
    cells = []
    for label, workers, resume in (
        ("1", 1, False),
        ("2", 2, False),
        ("4", 4, False),
        ("1 + resume", 1, True),
    ):
        regions = plan_regions(grid, workers, resume)
        tiles = sum(grid.for_region(r).num_tiles for r in regions)
        cells.append(f"{label}: {tiles / grid.num_tiles:.3f} ({len(regions)} regions)")
    return "planned, 6144² at 256/32, workers " + " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=3072, help="benchmark scene side in px")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="total threads")
    parser.add_argument(
        "--nodata-sizes", type=int, nargs=2, default=[3000, 24000], metavar=("SMALL", "LARGE")
    )
    parser.add_argument("--child", nargs=2, metavar=("SCENE", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kill-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.scene, args.output = args.child
        child(args)
        return

    print(f"scene {args.size}², tile {args.tile}, overlap {args.overlap}, {args.threads} threads in all")
    print(planned_overhead())
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scene = folder / "scene.tif"
        write_blocky_scene(scene, args.size, pixel_size=0.25, cell=8)
        runs = {}
        for workers in (1, 2, 4):
            runs[workers] = run_child(scene, folder / f"w{workers}.tif", args, workers=workers)
        print(
            "measured tiles / grid tiles, workers "
            + " | ".join(f"{w}: {r['tiles'] / r['grid_tiles']:.3f}" for w, r in runs.items())
        )
        one, two = runs[1], runs[2]
        print(
            f"wall 2 workers / 1 worker at {args.threads} threads: {two['seconds'] / one['seconds']:.2f} "
            f"({two['seconds']:.1f} s / {one['seconds']:.1f} s; "
            f"cluster start-up {two['startup']:.1f} s apart)"
        )
        print(
            "peak RSS per worker process (MB): "
            + " | ".join(
                f"{w}: {', '.join(f'{m:.0f}' for m in (r['worker_peaks_mb'] or [r['peak_mb']]))}"
                for w, r in runs.items()
            )
            + f" (client with the cluster: {two['peak_mb']:.0f})"
        )
        killed = run_child(scene, folder / "resumed.tif", args, resume=True, kill_at=0.5)
        resumed = run_child(scene, folder / "resumed.tif", args, resume=True)
        whole = run_child(scene, folder / "whole.tif", args, resume=True)
        assert killed is None
        print(
            f"resume after a SIGKILL at 50 %: {resumed['tiles']} / {whole['tiles']} tiles "
            f"({resumed['tiles'] / whole['tiles']:.2f}), {resumed['seconds']:.1f} s / "
            f"{whole['seconds']:.1f} s ({resumed['seconds'] / whole['seconds']:.2f}) of a whole --resume run"
        )
        peaks = {}
        for size in args.nodata_sizes:
            corner = folder / f"corner{size}.tif"
            write_corner_scene(corner, size)
            report = run_child(corner, folder / f"corner{size}.out.tif", args, tile=256, overlap=32)
            peaks[size] = report["peak_mb"]
            corner.unlink()
        small, large = args.nodata_sizes
        print(
            f"valid only in a 300² corner: peak RSS {large}² {peaks[large]:.0f} MB / {small}² "
            f"{peaks[small]:.0f} MB = {peaks[large] / peaks[small]:.2f} (target <= 1.25)"
        )


if __name__ == "__main__":
    main()
