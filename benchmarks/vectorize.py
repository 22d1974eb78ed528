"""geoseg vectorize against polygonizing the whole array at once, and its memory as the raster grows.

    python benchmarks/vectorize.py [--sizes 5000,20000] [--block-size PX] [--keep DIR]

Writes class rasters with a realistic texture (six classes: the argmax of six smooth random fields, as a
segmentation network's output looks, with some small specks) as tiled GeoTIFFs in a temporary folder,
generated block by block so the generator's memory stays bounded too. Every measured run is a fresh child
process reporting its own peak RSS (``ru_maxrss``) and wall time, so runs do not share caches or memory.

Printed, side by side on the first size: the time and peak memory of ``geoseg.vectorize`` and of the
whole-array way (``rasterio.features.shapes`` over the whole array, the same fast conversion to shapely,
written once with pyogrio); then geoseg's time and peak memory on each size.
Targets: geoseg at least 0.8x the whole-array speed; the largest size within 1.5x the memory of the first.
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


def write_texture(path: Path, size: int) -> None:
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
        "transform": from_origin(366976.5, 5808562.6, 0.1, 0.1),
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
                dst.write(texture_block(row, col, h, w), 1, window=Window(col, row, w, h))


def run_geoseg(src: str, out: str, block_size: int) -> dict:
    from geoseg.vector.vectorize import vectorize

    result = vectorize(src, out, block_size=block_size, overwrite=True)
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


def child(kind: str, src: str, out: str, block_size: int) -> None:
    start = time.perf_counter()
    info = run_geoseg(src, out, block_size) if kind == "geoseg" else run_whole_array(src, out)
    info["seconds"] = time.perf_counter() - start
    info["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(info))


def measure(kind: str, src: Path, out: Path, block_size: int) -> dict:
    out.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", kind, str(src), str(out), "--block-size", str(block_size)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--block-size", type=int, default=None, help="default: geoseg's default block size")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the rasters in (reused)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block_size is None:
        from geoseg.vector.vectorize import DEFAULT_BLOCK_SIZE

        args.block_size = DEFAULT_BLOCK_SIZE
    if args.child:
        child(*args.child, args.block_size)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rasters = {}
        for size in sizes:
            rasters[size] = folder / f"texture_{size}.tif"
            if not rasters[size].exists():
                start = time.perf_counter()
                write_texture(rasters[size], size)
                print(f"generated {size}x{size} texture in {time.perf_counter() - start:.0f} s", flush=True)
        first = sizes[0]
        whole = measure("whole", rasters[first], Path(tmp) / "whole.gpkg", args.block_size)
        ours = {
            size: measure("geoseg", rasters[size], Path(tmp) / f"geoseg_{size}.gpkg", args.block_size)
            for size in sizes
        }

    print(f"\nvectorize, {first}x{first} texture, 6 classes, block {args.block_size} px, GPKG output")
    print(f"{'':34}{'polygons':>10}{'time s':>10}{'peak MiB':>10}")
    for name, r in (("whole array (shapes + pyogrio)", whole), ("geoseg vectorize", ours[first])):
        print(f"{name:34}{r['polygons']:>10}{r['seconds']:>10.1f}{r['peak_mib']:>10.0f}")
    print(f"speed vs whole array: {whole['seconds'] / ours[first]['seconds']:.2f}x (target >= 0.8x)")
    print("\ngeoseg peak memory as the raster grows (same texture)")
    for size in sizes:
        r = ours[size]
        ratio = r["peak_mib"] / ours[first]["peak_mib"]
        line = (
            f"{size:>6}x{size:<6}{r['polygons']:>10} polygons{r['seconds']:>8.1f} s{r['peak_mib']:>8.0f} MiB"
        )
        print(f"{line}  {ratio:.2f}x")
    print("target: the largest within 1.5x the memory of the first")


if __name__ == "__main__":
    main()
