"""End-to-end tiles per second of ``predict`` against the same network's bare forward passes.

Both run the same number of tiles, with the same tile size, batch size, network and device, side by side in
one process; the ratio (end-to-end / bare) says how much the plumbing costs: reading, normalising, blending,
writing, overviews and the COG copy. Target: >= 0.90 on the CPU.

    .venv/bin/python benchmarks/throughput.py                      # ResNet-18, 256 px tiles, ~49 tiles
    .venv/bin/python benchmarks/throughput.py --size 3000 --tile 512 --overlap 128 --backbone resnet50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scenes import write_blocky_scene

from geoseg.device import resolve_device
from geoseg.inference.grid import TileGrid
from geoseg.inference.scene import predict_scene
from geoseg.model.manet import build_manet
from geoseg.model.normalize import normalize
from geoseg.model.presets import preset_card


def bare_seconds(model, card, tiles: int, tile: int, batch: int, device) -> float:
    """Forward passes alone on ``tiles`` random tiles: input already on the device, no softmax, no I/O."""
    x = torch.randint(0, 256, (batch, 3, tile, tile), dtype=torch.uint8, device=device)
    x = normalize(x, card.value_range, card.mean, card.std)
    sizes = [batch] * (tiles // batch) + ([tiles % batch] if tiles % batch else [])
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for n in sizes:
            model(x[:n])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1568, help="scene width and height in px")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating bare / end-to-end measurements")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    card = preset_card("potsdam", backbone=args.backbone)
    torch.manual_seed(0)
    model = build_manet(card.num_classes, args.backbone).eval().to(device)
    tiles = TileGrid(args.size, args.size, args.tile, args.overlap).num_tiles

    with tempfile.TemporaryDirectory() as folder:
        scene = Path(folder) / "scene.tif"
        write_blocky_scene(scene, args.size, pixel_size=0.3, cell=16)
        bare_seconds(model, card, args.batch_size, args.tile, args.batch_size, device)  # warm-up
        print(
            f"scene {args.size}x{args.size}, {tiles} tiles of {args.tile} px (overlap {args.overlap}), "
            f"batch {args.batch_size}, {args.backbone}, {device}, {torch.get_num_threads()} torch threads"
        )
        ratios = []
        for repeat in range(args.repeats):
            bare = bare_seconds(model, card, tiles, args.tile, args.batch_size, device)
            out = Path(folder) / f"classes{repeat}.tif"
            start = time.perf_counter()
            result = predict_scene(
                model,
                card,
                scene,
                out,
                tile=args.tile,
                overlap=args.overlap,
                batch_size=args.batch_size,
                device=device,
            )
            end_to_end = time.perf_counter() - start
            assert result.tiles == tiles
            ratios.append(bare / end_to_end)
            print(
                f"run {repeat + 1}: bare forward {tiles / bare:6.2f} tiles/s ({bare:.2f} s)   "
                f"predict end-to-end {tiles / end_to_end:6.2f} tiles/s ({end_to_end:.2f} s)   "
                f"ratio {ratios[-1]:.3f}"
            )
        print(f"median ratio end-to-end / bare: {statistics.median(ratios):.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
