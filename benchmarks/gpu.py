"""Does the GPU pipeline keep its device busy? Network, reading and end to end, side by side in one run.

- **network**: bare forward passes of the bundled model (or ``--model``) in the configuration ``predict``
  uses on this GPU: ``--precision auto`` (bf16 where supported), channels_last, ``--compile`` if given;
  uint8 tiles already on the device, normalised there, synchronised before the clock stops;
- **read**: the reader pool alone on a JPEG-compressed tiled GeoTIFF (real pixels from the sample scene,
  repeated to ``--size``): read, decode, batch into reused page-locked buffers and upload, no network;
- **end to end**: ``geoseg predict`` on that scene (compile and warm-up included).

Prints tiles/s of each, end to end ÷ min(network, read) (issue 9 target: >= 0.9) and the projected time of
a 100,000² scene at tile 512 / overlap 128 at the end-to-end rate. Needs a CUDA GPU; without one it says
so and exits with status 1 (nothing is measured on the CPU here: see benchmarks/cpu_speed.py).

    .venv/bin/python benchmarks/gpu.py
    .venv/bin/python benchmarks/gpu.py --size 16384 --compile
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from geoseg.device import autocast_dtype, resolve_precision
from geoseg.inference.acceleration import resolve_batch_size
from geoseg.inference.batch import predict
from geoseg.inference.channel import Stop
from geoseg.inference.grid import tile_starts
from geoseg.inference.plan import plan_scene
from geoseg.inference.reader import Batch, End, Failed, Reader, default_readers
from geoseg.inference.stream import prepare_network
from geoseg.model.checkpoint import default_checkpoint_path
from geoseg.model.loading import load_model
from geoseg.model.normalize import normalize

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "netherlands_0p25m_epsg28992.tif"
PROJECTED = 100_000


def write_jpeg_scene(path: Path, size: int) -> None:
    """The sample scene mirrored and repeated to ``size``², JPEG-compressed in 512 px blocks (costly to
    decode, like the aerial COGs people run)."""
    with rasterio.open(SAMPLE) as src:
        base = src.read()
    tile = np.concatenate([base, base[:, :, ::-1]], axis=2)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True, blockxsize=512,
        blockysize=512, compress="JPEG", photometric="YCBCR", crs="EPSG:28992",
        transform=Affine(0.25, 0, 1e5, 0, -0.25, 5e5), BIGTIFF="IF_SAFER",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for _, window in dst.block_windows(1):
            rows = np.arange(window.row_off, window.row_off + window.height) % tile.shape[1]
            cols = np.arange(window.col_off, window.col_off + window.width) % tile.shape[2]
            dst.write(tile[:, rows][:, :, cols], window=window)


def network_rate(network, card, device, amp, tile: int, batch: int, batches: int) -> float:
    """Tiles per second of the bare network on uint8 tiles already on the device."""
    x = torch.randint(0, 256, (batch, len(card.bands), tile, tile), dtype=torch.uint8, device=device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=amp, enabled=amp is not None):
        for _ in range(2):  # warm-up (and compilation)
            network(normalize(x, card.value_range, card.mean, card.std))
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            network(normalize(x, card.value_range, card.mean, card.std))
        torch.cuda.synchronize(device)
    return batch * batches / (time.perf_counter() - start)


def read_rate(scene: Path, card, device, batch: int, readers: int) -> float:
    """Tiles per second of the reader pool alone: read, decode, batch, upload."""
    plan = plan_scene(card, scene)
    stop = Stop()
    tiles = 0
    with rasterio.open(scene) as source:
        reader = Reader(source, plan, plan.grid, batch, device, stop, readers=readers)
        start = time.perf_counter()
        reader.start()
        while not isinstance(item := reader.out.get(timeout=600), End):
            if isinstance(item, Failed):
                raise item.error
            if isinstance(item, Batch):
                reader.upload(item.tensor, item.slot)
                reader.release(item.slot)
                tiles += len(item.tiles)
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        stop.set()
        reader.join()
    return tiles / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=8192, help="scene width and height in px")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled one)")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--readers", type=int, default=None, help="reader threads (default: predict's)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batches", type=int, default=20, help="timed batches of the bare network")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU and torch.cuda.is_available() is False here: nothing "
                 "measured (the CPU has benchmarks/cpu_speed.py)")  # fmt: skip

    device = torch.device("cuda")
    model_path = args.model or default_checkpoint_path()
    model, card = load_model(model_path, None, None)
    tile, overlap = card.tile_size, card.overlap
    precision, amp = resolve_precision("auto", device), autocast_dtype("auto", device)
    batch = resolve_batch_size(args.batch_size, device, tile)
    network = prepare_network(model, device, compile=args.compile)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}: {precision}, channels_last, "
          f"compile {args.compile}, batch {batch}, tile {tile}, overlap {overlap}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        write_jpeg_scene(scene, args.size)
        with rasterio.open(scene) as src:
            readers = args.readers or default_readers(src, device)
        net = network_rate(network, card, device, amp, tile, batch, args.batches)
        read = read_rate(scene, card, device, batch, readers)
        start = time.perf_counter()
        (result,) = predict([scene], Path(tmp) / "classes.tif", model=model_path, device="cuda",
                            batch_size=batch, compile=args.compile)  # fmt: skip
        e2e = result.tiles / (time.perf_counter() - start)
    print(f"network:     {net:8.1f} tiles/s")
    print(f"read:        {read:8.1f} tiles/s ({readers} readers, JPEG {args.size}²)")
    print(f"end to end:  {e2e:8.1f} tiles/s ({result.tiles} tiles, model load and compile included)")
    print(f"end to end / min(network, read): {e2e / min(net, read):.2f}")
    tiles = len(tile_starts(PROJECTED, tile, tile - overlap)) ** 2
    minutes = tiles / e2e / 60
    print(f"projected {PROJECTED:,}² scene ({tiles:,} tiles of {tile}, overlap {overlap}): {minutes:.0f} min")


if __name__ == "__main__":
    main()
