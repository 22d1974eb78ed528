"""Labels from polygons against the same labels as a raster: training and evaluation speed, and memory.

A synthetic scene of ``--size``² pixels (0.25 m, RD New) is covered by a grid of about ``--polygons`` square
label polygons of random classes; the equivalent label raster is the same grid burnt into pixels, so both
give the same label pixels. Measured side by side, on one machine, in one process:

- training data: batches of random crops (``CropSampler``, as ``geoseg train`` draws them) per second from
  the polygons ÷ from the raster, alone and with a training step of MANet-ResNet18 on each batch, the two
  taken in turns;
- evaluation: ``evaluate`` of a class raster against the polygons ÷ against the label raster;
- memory: peak and window-reading RSS (fresh processes) with the window's polygons fixed and 5,000 vs
  ``--polygons`` polygons in all, the others lying outside the windows read.

    python benchmarks/vector_labels.py [--size 4200] [--polygons 50000] [--batches 20] [--batch-size 2]
                                       [--crop 256] [--train-steps 2] [--threads N]
    python benchmarks/vector_labels.py --size 10000   # the issue's figure: 10,000² px, 50,000 polygons
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine
from pyogrio.raw import write as write_vector

ORIGIN = (120_000.0, 487_000.0)
PIXEL = 0.25
CLASSES = 6


def _transform() -> Affine:
    return Affine(PIXEL, 0, ORIGIN[0], 0, -PIXEL, ORIGIN[1])


def grid_cells(size: int, polygons: int, columns: tuple[int, int] | None = None) -> tuple[int, np.ndarray]:
    """The side in pixels of square cells giving about ``polygons`` cells over ``size``² (or over the
    column range ``columns``), and the seeded class of each cell (rows × columns)."""
    width = size if columns is None else columns[1] - columns[0]
    side = max(2, round(np.sqrt(size * width / polygons)))
    rng = np.random.default_rng(0)
    return side, rng.integers(0, CLASSES, size=(-(-size // side), -(-width // side)))


def write_scene(folder: Path, size: int, polygons: int) -> dict[str, Path]:
    """Image, label raster, label polygons and a prediction (the labels with a stripe wrong), on one grid."""
    side, classes = grid_cells(size, polygons)
    profile = dict(driver="GTiff", width=size, height=size, crs="EPSG:28992", transform=_transform(),
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate")  # fmt: skip
    paths = {k: folder / f"{k}.tif" for k in ("image", "label", "prediction")}
    palette = np.array([[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]])
    with (
        rasterio.open(paths["image"], "w", count=3, dtype="uint8", **profile) as image,
        rasterio.open(paths["label"], "w", count=1, dtype="uint8", **profile) as label,
        rasterio.open(paths["prediction"], "w", count=1, dtype="uint8", nodata=255, **profile) as prediction,
    ):
        for row in range(0, size, 1024):
            rows = np.arange(row, min(size, row + 1024))
            block = classes[rows[:, None] // side, np.arange(size)[None] // side].astype(np.uint8)
            window = rasterio.windows.Window(0, row, size, len(rows))
            label.write(block[None], window=window)
            image.write(np.moveaxis(palette[block], -1, 0).astype(np.uint8), window=window)
            wrong = block.copy()
            wrong[:, ::7] = (wrong[:, ::7] + 1) % CLASSES
            prediction.write(wrong[None], window=window)
    paths["polygons"] = folder / "labels.gpkg"
    write_grid_polygons(paths["polygons"], size, side, classes)
    return paths


def write_grid_polygons(
    path: Path, size: int, side: int, classes: np.ndarray, columns: tuple[int, int] | None = None
) -> int:
    """The cells as polygons in RD New (class ids in ``class_id``, as ``geoseg vectorize`` writes them),
    over the whole scene or the column range ``columns``."""
    col0, col_end = columns or (0, size)
    rows, cols = np.indices(classes.shape)
    c0, r0 = col0 + cols.ravel() * side, rows.ravel() * side
    c1, r1 = np.minimum(c0 + side, col_end), np.minimum(r0 + side, size)
    t = _transform()
    x0, y0 = t * (c0, r0)
    x1, y1 = t * (c1, r1)
    boxes = shapely.box(x0, y1, x1, y0)
    write_vector(path, shapely.to_wkb(boxes), field_data=[classes.ravel().astype(np.int32)],
                 fields=["class_id"], geometry_type="Polygon", crs="EPSG:28992")  # fmt: skip
    return len(boxes)


def _sets(paths: dict[str, Path], crop: int):
    from geoseg.labels.polygons import VectorLabelOptions
    from geoseg.labels.raster import LabelEncoding
    from geoseg.model.presets import preset_card
    from geoseg.training.dataset import check_pairs
    from geoseg.training.vector_dataset import vector_training_sets

    card = preset_card("potsdam", "resnet18")
    started = time.perf_counter()
    raster = check_pairs(
        [(paths["image"], paths["label"])], LabelEncoding(num_classes=CLASSES), card.bands, crop
    )
    raster_setup = time.perf_counter() - started
    started = time.perf_counter()
    polygons = vector_training_sets(
        [paths["image"]], paths["polygons"], VectorLabelOptions("class_id"), card.class_names,
        crop=crop, expected_bands=card.bands,
    ).train  # fmt: skip
    return card, raster, polygons, raster_setup, time.perf_counter() - started


def rates(sides, args, step=None, count: int | None = None) -> list[float]:
    """Batches (and a training ``step`` on each, when given) per second for each of ``sides`` (lists of
    labelled rasters), taken in turns batch by batch so that a change in the machine's load hits both alike;
    one untimed turn first."""
    from geoseg.training.dataset import CropSampler

    samplers = [CropSampler(rasters, args.crop, np.random.default_rng(1)) for rasters in sides]
    seconds = [0.0] * len(sides)
    count = count or args.batches
    for turn in range(count + 1):
        for k, sampler in enumerate(samplers):
            started = time.perf_counter()
            images, labels = sampler.sample(args.batch_size)
            if step is not None:
                step(images, labels)
            if turn:
                seconds[k] += time.perf_counter() - started
    return [count / s for s in seconds]


def training_step(card):
    """One step as ``geoseg train`` takes it: normalise, forward, loss, backward, AdamW."""
    import torch

    from geoseg.model.manet import build_manet
    from geoseg.model.normalize import normalize
    from geoseg.training.loop import TrainingConfig, _optimizer
    from geoseg.training.losses import segmentation_loss

    torch.manual_seed(0)
    model = build_manet(CLASSES, "resnet18").train()
    optimizer = _optimizer(model, TrainingConfig())

    def step(images, labels) -> None:
        loss = segmentation_loss(model(normalize(images, card.value_range, card.mean, card.std)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def evaluation_seconds(paths: dict[str, Path]) -> tuple[float, float, bool]:
    from geoseg.evaluation import evaluate
    from geoseg.labels.polygons import VectorLabelOptions

    started = time.perf_counter()
    from_raster = evaluate(paths["prediction"], paths["label"])
    raster_s = time.perf_counter() - started
    started = time.perf_counter()
    from_polygons = evaluate(
        paths["prediction"], paths["polygons"], label_polygons=VectorLabelOptions("class_id")
    )
    same = np.array_equal(from_raster.confusion, from_polygons.confusion)
    return raster_s, time.perf_counter() - started, same


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_probe(size: int, polygons: int, windows: int) -> None:
    """(In a fresh process.) The left half holds a fixed grid of 2,000 polygons, the right half the rest;
    windows are read in the left half only. Prints RSS after loading and after the windows, and the peak."""
    from rasterio.crs import CRS

    from geoseg.labels.polygons import VectorLabelOptions, load_label_polygons, on_grid

    names = [str(i) for i in range(CLASSES)]

    import pyogrio

    half = size // 2
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as name:
        folder = Path(name)
        side, classes = grid_cells(size, 2000, (0, half))
        write_grid_polygons(folder / "left.gpkg", size, side, classes, (0, half))
        side, classes = grid_cells(size, max(1, polygons - 2000), (half, size))
        write_grid_polygons(folder / "right.gpkg", size, side, classes, (half, size))
        a, b = pyogrio.raw.read(folder / "left.gpkg"), pyogrio.raw.read(folder / "right.gpkg")
        write_vector(folder / "labels.gpkg", np.concatenate([a[2], b[2]]),
                     field_data=[np.concatenate([a[3][0], b[3][0]])], fields=["class_id"],
                     geometry_type="Polygon", crs="EPSG:28992")  # fmt: skip
        polygons = load_label_polygons(folder / "labels.gpkg", VectorLabelOptions("class_id"), names)
    grid, _ = on_grid(
        polygons,
        CRS.from_epsg(28992),
        _transform(),
        size,
        size,
    )
    loaded = _rss_mib("VmRSS")
    rng = np.random.default_rng(0)
    for _ in range(windows):
        row, col = int(rng.integers(0, size - 512)), int(rng.integers(0, half - 512))
        grid.read(row, col, 512, 512)
    after = _rss_mib("VmRSS")
    record = {"polygons": len(grid.geometries), "loaded_mib": loaded, "after_windows_mib": after}
    print(json.dumps({**record, "peak_mib": _rss_mib("VmHWM")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=4200, help="scene side in pixels (above 4096: windows read)"
    )
    parser.add_argument("--polygons", type=int, default=50_000)
    parser.add_argument("--batches", type=int, default=20, help="timed batches of the data-only measure")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps (0: none)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.size, args.memory_probe, 50)
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as folder:
        started = time.perf_counter()
        paths = write_scene(Path(folder), args.size, args.polygons)
        count = len(pyogrio.raw.read(paths["polygons"], columns=[])[2])
        print(f"scene {args.size}² px with {count:,} label polygons written in "
              f"{time.perf_counter() - started:.1f} s; {torch.get_num_threads()} torch threads of "
              f"{os.cpu_count()} cores")  # fmt: skip
        card, raster, polygons, raster_setup, polygon_setup = _sets(paths, args.crop)
        print(f"setup (check, count classes): raster {raster_setup:.1f} s, polygons {polygon_setup:.1f} s")
        print(f"crop {args.crop}, batch {args.batch_size}; rates measured side by side (higher is better)")
        data = rates((raster, polygons), args)
        print(f"  data only      raster {data[0]:7.2f} batches/s  polygons {data[1]:7.2f}  "
              f"ratio {data[1] / data[0]:.2f}")  # fmt: skip
        if args.train_steps:
            step = training_step(card)
            steps = rates((raster, polygons), args, step, args.train_steps)
            print(f"  training steps raster {steps[0]:7.3f} steps/s    polygons {steps[1]:7.3f}  "
                  f"ratio {steps[1] / steps[0]:.2f}  (target >= 0.9)")  # fmt: skip
        raster_s, polygons_s, same = evaluation_seconds(paths)
        print(f"  evaluate       raster {raster_s:7.2f} s        polygons {polygons_s:7.2f} s  "
              f"speed ratio {raster_s / polygons_s:.2f}; same confusion matrix: {same}")  # fmt: skip
    print("memory (fresh processes; 2,000 polygons where 50 windows of 512² are read, the rest elsewhere):")
    for n in (5_000, args.polygons):
        out = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--memory-probe", str(n)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        m = json.loads(out.strip().splitlines()[-1])
        grown = m["after_windows_mib"] - m["loaded_mib"]
        print(f"  {m['polygons']:>7,} polygons: RSS {m['loaded_mib']:.0f} MiB loaded, "
              f"{m['after_windows_mib']:.0f} MiB after the windows (+{grown:.1f}), "
              f"peak {m['peak_mib']:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
