"""geoseg vectorize: speed against the whole-array way, the sieve's cost, and memory as the raster grows.

    python benchmarks/vectorize.py [--parts speed,split,sieve,simplify,memory] [--speed-size 4000]
                                   [--repeat 3] [--sieve-size 2048] [--sizes 5000,20000] [--keep DIR]

Class rasters are generated block by block (bounded memory) as tiled GeoTIFFs in EPSG:32633, 0.5 m pixels:

* *percolating*: a background class whose pixels lie between the quartiles of one smooth noise field (about
  half the scene, one region touching every part of it, full of holes, as impervious surfaces or low
  vegetation are), the rest split into three classes by a second field;
* *texture*: the argmax of six smooth fields with specks, as a segmentation network's output looks.

Every measured run is a fresh child process reporting its own peak RSS (``ru_maxrss``) and wall time.

Printed:

* speed: geoseg vectorize (default split grid, true areas) and the whole-array way
  (``rasterio.features.shapes`` over the whole array, the same conversion to shapely, planar areas, one
  pyogrio write) on the percolating raster, the median of ``--repeat`` alternating runs of each; target:
  geoseg at least as fast, in less memory.
* split: geoseg's time and peak memory on the same raster with split grids of 1024, 2048 and 4096 pixels
  (how the default was chosen).
* sieve: on the texture raster, per 2048-pixel cell, the time of one pass over the raster (read + label the
  regions) and of the sieve at 4, 64 and 1,000 pixels, and the ratio; target: a small constant factor
  whatever the threshold (the old halo sieve read 1.1x, 3.6x and 31.7x the raster at 4, 64 and 400 px).
* simplify: on the texture raster (``--sieve-size``), geoseg's time and peak memory with ``--simplify 2``
  (4 pixels) and with ``--simplify 2 --min-area 50`` (200 pixels: polygons that would fall under it keep
  their pixel edges, the rest is simplified again), as ratios to the plain run.
* memory: geoseg's peak memory and time on the percolating raster at each size, at a quarter of the
  resolution (each value repeated 4 x 4, so the largest size runs in a few minutes); target: the largest
  within 1.5x the memory of the first.
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

CLASSES = 6
TILE = 2048  # generator block


def _hash_uniform(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """Stateless uniform [0, 1) noise at integer lattice points (so any block can be generated alone)."""
    x = (i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
        j.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    )
    x ^= np.uint64(salt * 0x165667B19E3779F9 & 0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)


def _value_noise(rows: np.ndarray, cols: np.ndarray, scale: int, salt: int) -> np.ndarray:
    """Smooth noise: lattice values every ``scale`` pixels, blended with a smoothstep."""
    y, x = rows / scale, cols / scale
    i0, j0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    ty, tx = y - i0, x - j0
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    ii, jj = i0[:, None], j0[None, :]
    v00, v01 = _hash_uniform(ii, jj, salt), _hash_uniform(ii, jj + 1, salt)
    v10, v11 = _hash_uniform(ii + 1, jj, salt), _hash_uniform(ii + 1, jj + 1, salt)
    ty, tx = ty[:, None].astype(np.float32), tx[None, :].astype(np.float32)
    top = v00 + (v01 - v00) * tx
    bottom = v10 + (v11 - v10) * tx
    return top + (bottom - top) * ty


def texture_block(row0: int, col0: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rows = np.arange(row0, row0 + height, dtype=np.float64)
    cols = np.arange(col0, col0 + width, dtype=np.float64)
    best = np.full((height, width), -np.inf, np.float32)
    out = np.zeros((height, width), np.uint8)
    for k in range(CLASSES):
        field = _value_noise(rows, cols, 64, seed * 100 + k) + 0.45 * _value_noise(
            rows, cols, 9, seed * 100 + 50 + k
        )
        better = field > best
        out[better] = k
        np.maximum(best, field, out=best)
    return out


def _fractal(rows: np.ndarray, cols: np.ndarray, scale: int, salt: int) -> np.ndarray:
    return (
        _value_noise(rows, cols, scale, salt)
        + 0.5 * _value_noise(rows, cols, scale // 4, salt + 1)
        + 0.25 * _value_noise(rows, cols, max(scale // 12, 2), salt + 2)
    )


def percolating_block(row0: int, col0: int, height: int, width: int) -> np.ndarray:
    """Class 1 between the quartiles of one field (one region across the scene); 0, 2, 3 by another."""
    rows = np.arange(row0, row0 + height, dtype=np.float64)
    cols = np.arange(col0, col0 + width, dtype=np.float64)
    a, b = _fractal(rows, cols, 48, 1), _fractal(rows, cols, 40, 4)
    out = np.where(b < 0.72, 0, np.where(b < 1.03, 2, 3)).astype(np.uint8)
    out[(a > 0.72) & (a < 1.03)] = 1  # about the quartiles of the sum of three smooth noises
    return out


def write_raster(path: Path, size: int, block) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(366976.5, 5808562.6, 0.5, 0.5),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, TILE):
            for col in range(0, size, TILE):
                h, w = min(TILE, size - row), min(TILE, size - col)
                dst.write(block(row, col, h, w), 1, window=Window(col, row, w, h))


def run_geoseg(src: str, out: str, split: int | None = None, **options) -> dict:
    from geoseg.vector.vectorize import DEFAULT_SPLIT, vectorize

    split = DEFAULT_SPLIT if split is None else split
    result = vectorize(src, out, overwrite=True, split_polygons_at=split, **options)
    return {"polygons": sum(result.polygons.values())}


def run_whole_array(src: str, out: str) -> dict:
    import rasterio
    import shapely
    from pyogrio import raw
    from rasterio import features

    from geoseg.vector.polygonize import shapes_to_polygons

    with rasterio.open(src) as dataset:
        classes = dataset.read(1)
        transform, crs = dataset.transform, dataset.crs
    polygons, values = shapes_to_polygons(list(features.shapes(classes, transform=transform)))
    names = np.array([str(v) for v in values], dtype=object)
    areas = shapely.area(polygons)
    raw.write(
        out,
        shapely.to_wkb(polygons),
        [values.astype(np.int32), names, areas],
        ["class_id", "class_name", "area"],
        geometry_type="Polygon",
        crs=crs.to_wkt(),
        layer="polygons",
    )
    return {"polygons": len(values)}


def run_sieve(src: str, thresholds: list[int]) -> dict:
    """Seconds of one pass (read + label) and of the sieve at each threshold, summed over the cells."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    from geoseg.vector.blocks import BlockGrid, label_regions
    from geoseg.vector.sieve import sieve

    seconds = {"one pass": 0.0, **{str(m): 0.0 for m in thresholds}}
    with rasterio.open(src) as dataset:
        for _, _, w in BlockGrid(dataset.height, dataset.width, 2048):
            start = time.perf_counter()
            classes = dataset.read(1, window=RioWindow(w.col0, w.row0, w.width, w.height))
            label_regions(classes, None, 4)
            seconds["one pass"] += time.perf_counter() - start
            for m in thresholds:
                start = time.perf_counter()
                sieve(classes, None, m, 4)
                seconds[str(m)] += time.perf_counter() - start
    return seconds


def child(kind: str, src: str, out: str) -> None:
    start = time.perf_counter()
    if kind == "sieve":
        info = run_sieve(src, [4, 64, 1000])
    elif kind.startswith("simplify"):  # simplify:METRES or simplify:METRES:MIN_AREA
        _, *numbers = kind.split(":")
        options = {"simplify": float(numbers[0])}
        if len(numbers) > 1:
            options["min_area"] = float(numbers[1])
        info = run_geoseg(src, out, **options)
    elif kind.startswith("geoseg"):  # geoseg or geoseg:SPLIT
        info = run_geoseg(src, out, int(kind.split(":")[1]) if ":" in kind else None)
    else:
        info = run_whole_array(src, out)
    info["seconds"] = time.perf_counter() - start
    info["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(info))


def measure(kind: str, src: Path, out: Path) -> dict:
    out.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", kind, str(src), str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def raster(folder: Path, name: str, size: int, block) -> Path:
    path = folder / f"{name}_{size}.tif"
    if not path.exists():
        start = time.perf_counter()
        write_raster(path, size, block)
        print(f"generated {name} {size}x{size} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="speed,split,sieve,simplify,memory")
    parser.add_argument("--speed-size", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each way in the speed part")
    parser.add_argument("--sieve-size", type=int, default=2048)
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the rasters in (reused)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from geoseg.vector.vectorize import DEFAULT_SPLIT

    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        out = Path(tmp) / "out.gpkg"
        if "speed" in parts:
            n = args.speed_size
            src = raster(folder, "percolating", n, percolating_block)
            runs: dict[str, list[dict]] = {"whole": [], "geoseg": []}
            for _ in range(args.repeat):  # alternating, so a busy machine slows both alike
                for kind in runs:
                    runs[kind].append(measure(kind, src, out))
            whole, ours = (sorted(runs[kind], key=lambda r: r["seconds"])[args.repeat // 2] for kind in runs)
            print(f"\nspeed: {n}x{n} percolating raster, GPKG output, split grid {DEFAULT_SPLIT} px")
            print(f"median of {args.repeat} alternating runs each")
            print(f"{'':34}{'polygons':>10}{'time s':>10}{'peak MiB':>10}")
            for name, r in (("whole array (shapes + pyogrio)", whole), ("geoseg vectorize", ours)):
                print(f"{name:34}{r['polygons']:>10}{r['seconds']:>10.1f}{r['peak_mib']:>10.0f}")
            speed, memory = whole["seconds"] / ours["seconds"], ours["peak_mib"] / whole["peak_mib"]
            print(f"geoseg speed vs whole array: {speed:.2f}x, memory {memory:.2f}x")
        if "split" in parts:
            n = args.speed_size
            src = raster(folder, "percolating", n, percolating_block)
            runs = {split: measure(f"geoseg:{split}", src, out) for split in (1024, 2048, 4096)}
            print(f"\nsplit grid: {n}x{n} percolating raster (one 4096 cell holds it whole)")
            for split, r in runs.items():
                print(
                    f"--split-polygons-at {split:>5}: {r['polygons']:>8} polygons{r['seconds']:>8.1f} s"
                    f"{r['peak_mib']:>8.0f} MiB"
                )
        if "sieve" in parts:
            n = args.sieve_size
            src = raster(folder, "texture", n, texture_block)
            r = measure("sieve", src, out)
            print(f"\nsieve: {n}x{n} texture raster, 2048-pixel cells, 4-connectivity")
            print(f"one pass (read + label): {r['one pass']:.2f} s")
            for m in ("4", "64", "1000"):
                print(f"sieve at {m:>4} px: {r[m]:6.2f} s = {r[m] / r['one pass']:.2f}x one pass")
        if "simplify" in parts:
            n = args.sieve_size
            src = raster(folder, "texture", n, texture_block)
            runs = {kind: measure(kind, src, out) for kind in ("geoseg", "simplify:2", "simplify:2:50")}
            plain = runs["geoseg"]
            print(f"\nsimplify: {n}x{n} texture raster, 0.5 m pixels, split grid {DEFAULT_SPLIT} px")
            for kind, r in runs.items():
                print(
                    f"{kind:>16}: {r['polygons']:>8} polygons{r['seconds']:>8.1f} s "
                    f"= {r['seconds'] / plain['seconds']:.2f}x{r['peak_mib']:>8.0f} MiB "
                    f"= {r['peak_mib'] / plain['peak_mib']:.2f}x"
                )
        if "memory" in parts:
            sizes = [int(s) for s in args.sizes.split(",")]

            def coarse(row0: int, col0: int, h: int, w: int) -> np.ndarray:
                """The percolating map at a quarter of the resolution, each pixel repeated 4 x 4."""
                small = percolating_block(row0 // 4, col0 // 4, -(-h // 4), -(-w // 4))
                return small.repeat(4, axis=0).repeat(4, axis=1)[:h, :w]

            runs = {n: measure("geoseg", raster(folder, "percolating-coarse", n, coarse), out) for n in sizes}
            print(f"\nmemory: percolating raster (4 x 4 pixel steps), split grid {DEFAULT_SPLIT} px")
            first = runs[sizes[0]]
            for n in sizes:
                r = runs[n]
                ratio = r["peak_mib"] / first["peak_mib"]
                print(
                    f"{n:>6}x{n:<6}{r['polygons']:>10} polygons{r['seconds']:>8.1f} s"
                    f"{r['peak_mib']:>8.0f} MiB  {ratio:.2f}x"
                )
            print("target: the largest within 1.5x the memory of the first")


if __name__ == "__main__":
    main()
