"""Peak resident memory of ``predict`` on a 2,000² and a 16,000² scene: it must not grow with the scene.

Each prediction runs in a fresh subprocess that reports its own peak RSS (``ru_maxrss``), under the same GDAL
settings as the ``geoseg`` command (block cache 256 MB unless ``--gdal-cache`` says otherwise). The scenes
are generated window by window, so the generator is bounded too. The network is a per-pixel 1x1 convolution
by default: the point is the plumbing (reading, accumulating, frontier, writing, COG copy), and a real
backbone would take hours on a 16,000² scene on a laptop CPU; ``--backbone resnet18`` uses MANet instead.
Target: large scene <= 1.25 x small scene.

    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --sizes 2000 8000 --backbone resnet18 --tile 256 --overlap 0
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

import rasterio
from scenes import write_blocky_scene


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def child(args: argparse.Namespace) -> None:
    """One prediction; prints peak RSS before (imports + model) and after, as JSON."""
    import torch

    from geoseg.inference.scene import predict_scene
    from geoseg.model.manet import build_manet
    from geoseg.model.presets import preset_card

    torch.manual_seed(0)
    if args.backbone == "pixel":
        card = preset_card("potsdam")
        model = torch.nn.Conv2d(3, card.num_classes, 1)
    else:
        card = preset_card("potsdam", backbone=args.backbone)
        model = build_manet(card.num_classes, args.backbone)
    model.eval()
    before = peak_rss_mb()
    start = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=args.gdal_cache, GDAL_NUM_THREADS="ALL_CPUS"):
        result = predict_scene(
            model,
            card,
            args.scene,
            args.output,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            chunk_size=args.chunk,
            device="cpu",
        )
    print(
        json.dumps(
            {
                "baseline_mb": before,
                "peak_mb": peak_rss_mb(),
                "seconds": time.perf_counter() - start,
                "tiles": result.tiles,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 16000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--backbone", default="pixel", help="pixel (1x1 convolution) or resnet18/34/50/101")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=1024, help="chunk size in px")
    parser.add_argument(
        "--gdal-cache", type=int, default=256, help="GDAL block cache in MB (the CLI uses 256)"
    )
    parser.add_argument("--child", nargs=2, metavar=("SCENE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.scene, args.output = args.child
        child(args)
        return

    print(
        f"model {args.backbone}, tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}, "
        f"chunk {args.chunk}, GDAL cache {args.gdal_cache} MB"
    )
    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            scene = Path(folder) / f"scene_{size}.tif"
            start = time.perf_counter()
            write_blocky_scene(scene, size, pixel_size=0.1, cell=8)
            generated = time.perf_counter() - start
            command = [
                sys.executable,
                __file__,
                "--child",
                str(scene),
                str(Path(folder) / f"classes_{size}.tif"),
            ]
            for flag in ("backbone", "tile", "overlap", "batch_size", "chunk", "gdal_cache"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            run = subprocess.run(command, check=True, capture_output=True, text=True)
            report = json.loads(run.stdout.strip().splitlines()[-1])
            peaks[size] = report["peak_mb"]
            print(
                f"{size:>6}² scene: {report['tiles']:>5} tiles in {report['seconds']:7.1f} s, peak RSS "
                f"{report['peak_mb']:7.1f} MB (imports + model {report['baseline_mb']:.1f} MB; "
                f"scene generated in {generated:.1f} s, generator peak RSS {peak_rss_mb():.1f} MB)"
            )
            scene.unlink()
    small, large = args.sizes
    print(f"peak RSS ratio {large}² / {small}²: {peaks[large] / peaks[small]:.3f} (target <= 1.25)")


if __name__ == "__main__":
    main()
