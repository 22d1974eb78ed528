"""Start-up time of geoseg commands beside ``rio info`` on the same file, measured side by side.

Commands without a network (``info`` on a raster, ``vectorize``, ``evaluate``, ``quicklook``) should start
about as fast as ``rio info``; the ratio column says how far off they are. Each command runs as a fresh
process through its console script, ``--repeat`` times interleaved, and the best time is kept (start-up is
what is measured: the inputs are tiny). ``info`` on the bundled checkpoint is shown for comparison: it
imports torch.

    .venv/bin/python benchmarks/startup.py
    .venv/bin/python benchmarks/startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def write_class_raster(path: Path) -> None:
    profile = dict(driver="GTiff", width=256, height=256, count=1, dtype="uint8", crs="EPSG:32631")
    with rasterio.open(path, "w", transform=Affine(0.5, 0, 5e5, 0, -0.5, 6e6), **profile) as dst:
        dst.write(np.random.default_rng(0).integers(0, 3, (1, 256, 256)).astype("uint8"))


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    geoseg, rio = str(BIN / "geoseg"), str(BIN / "rio")
    with tempfile.TemporaryDirectory() as folder:
        classes = Path(folder) / "classes.tif"
        write_class_raster(classes)
        polygons = Path(folder) / "polygons.gpkg"
        commands = {
            "rio info classes.tif": [rio, "info", str(classes)],
            "geoseg --help": [geoseg, "--help"],
            "geoseg info classes.tif": [geoseg, "info", str(classes), "--json"],
            "geoseg vectorize classes.tif": [geoseg, "vectorize", str(classes), "-o", str(polygons), "-f"],
            "geoseg evaluate classes.tif classes.tif": [geoseg, "evaluate", str(classes), str(classes)],
            "geoseg quicklook --help": [geoseg, "quicklook", "--help"],
            "geoseg info model.safetensors (torch)": [
                geoseg,
                "info",
                str(REPO / "models" / "manet_r50_loveda_demo.safetensors"),
                "--json",
            ],
        }
        available = subprocess.run([geoseg, "--help"], capture_output=True, text=True, check=True).stdout
        if " quicklook " not in available:
            del commands["geoseg quicklook --help"]
        best = {name: float("inf") for name in commands}
        for _ in range(args.repeat):
            for name, command in commands.items():
                best[name] = min(best[name], seconds(command))
    reference = best["rio info classes.tif"]
    print(f"{'command':42} {'best s':>8} {'÷ rio info':>10}")
    for name, value in best.items():
        print(f"{name:42} {value:8.3f} {value / reference:10.2f}")


if __name__ == "__main__":
    main()
