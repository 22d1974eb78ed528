"""Edge effect at a scene's border: a crop predicted alone vs the same pixels predicted inside its scene.

A pixel on the border of a scene sits on the edge of its tile, where the network sees least; inside the
larger scene the same pixel has context on every side. For each scene, a crop (``--inset`` px in from every
side) is written as a GeoTIFF of its own and predicted alone, and the scene is predicted whole, both with
the bundled model and the same border margin (0: no border context; ``auto``: the default,
:func:`geoseg.inference.plan.border_margin`). The table gives the share of crop pixels whose class differs,
by distance d (px) from the crop's border: the outer ring (d = 0), 1-3, 4-15 and the interior (d >= 16).
The interior figure is the tile grid's shift between crop and scene; the excess at the border is the edge
effect. Target: outer ring <= 1.5 x interior. It also prints the tiles each margin costs.

    PYTHONPATH=. python benchmarks/borders.py        # sample scene + two real scenes, margin 0 and auto
    PYTHONPATH=. python benchmarks/borders.py --margins 0,32,64,128 --scenes sample
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from geoseg.inference.grid import TileGrid
from geoseg.inference.plan import border_margin
from geoseg.inference.scene import predict_scene
from geoseg.model.loading import load_model

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
# name -> (file, scene window (col_off, row_off, width, height) or None for the whole file)
SCENES = {
    "sample": (REPO / "sample_data" / "netherlands_0p25m_epsg28992.tif", None),
    "brazil": (DATA / "aerial" / "brazil_oam_0p10m_epsg3395.tif", (524, 524, 1000, 1000)),
    "naip": (DATA / "variants" / "naip_rgbn_5m_nodata0.tif", None),
}
RINGS = (("outer ring", 0, 1), ("1-3 px", 1, 4), ("4-15 px", 4, 16), ("interior", 16, None))
BIG = 10_000  # the side of a big scene whose tile counts are printed too


def write_window(source: Path, window: Window, target: Path) -> None:
    """``window`` of ``source`` as a GeoTIFF of its own, georeferenced where it lies."""
    with rasterio.open(source) as src:
        profile = src.profile.copy()
        profile.update(
            driver="GTiff",
            width=int(window.width),
            height=int(window.height),
            transform=src.window_transform(window),
            tiled=False,
            compress="deflate",
        )
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        profile.pop("photometric", None)
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(src.read(window=window))
            mask = src.dataset_mask(window=window)
            if (mask == 0).any() and src.nodata is None:
                dst.write_mask(mask)


def ring_distance(height: int, width: int) -> np.ndarray:
    """Each pixel's distance (px) from the nearest border of a ``height`` x ``width`` raster."""
    rows = np.minimum(np.arange(height), np.arange(height)[::-1])
    cols = np.minimum(np.arange(width), np.arange(width)[::-1])
    return np.minimum(rows[:, None], cols[None, :])


def disagreement(crop: np.ndarray, scene: np.ndarray) -> list[float]:
    """Share of the crop's valid pixels per ring whose class differs from the scene's."""
    distance = ring_distance(*crop.shape)
    valid = (crop != 255) & (scene != 255)
    shares = []
    for _, lo, hi in RINGS:
        ring = valid & (distance >= lo) & (distance < (hi if hi is not None else np.inf))
        shares.append(float((crop[ring] != scene[ring]).mean()))
    return shares


def predict(model, card, path: Path, out: Path, margin: int | None, precision: str) -> tuple[np.ndarray, int]:
    result = predict_scene(
        model, card, path, out, margin=margin, device="cpu", precision=precision, overwrite=True
    )
    with rasterio.open(out) as dataset:
        return dataset.read(1), result.tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default=",".join(SCENES), help=f"comma-separated, of {', '.join(SCENES)}")
    parser.add_argument("--margins", default="0,auto", help="border margins in px (auto: the default)")
    parser.add_argument("--inset", type=int, default=100, help="px between the crop and the scene's border")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    model, card = load_model(None, None, None)
    margins = [None if m == "auto" else int(m) for m in args.margins.split(",")]
    default = border_margin(card.tile_size, card.overlap)
    names = [f"{default} (auto)" if m is None else str(m) for m in margins]
    print(
        f"model tile {card.tile_size}, overlap {card.overlap}; crop inset {args.inset} px; "
        f"precision {args.precision}"
    )
    header = f"{'scene':<8} {'margin':>10} " + " ".join(f"{name:>10}" for name, _, _ in RINGS)
    print(f"{header} {'ring/int':>8} {'tiles scene':>11} {'tiles crop':>10} {'s':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for scene in args.scenes.split(","):
            source, window = SCENES[scene]
            if window is None:
                with rasterio.open(source) as src:
                    window = (0, 0, src.width, src.height)
            full, crop = folder / f"{scene}.tif", folder / f"{scene}.crop.tif"
            write_window(source, Window(*window), full)
            inset = args.inset
            crop_window = Window(inset, inset, window[2] - 2 * inset, window[3] - 2 * inset)
            write_window(full, crop_window, crop)
            for margin, name in zip(margins, names, strict=True):
                started = time.perf_counter()
                whole, scene_tiles = predict(model, card, full, folder / "out.tif", margin, args.precision)
                alone, crop_tiles = predict(model, card, crop, folder / "out.tif", margin, args.precision)
                inside = whole[inset : inset + alone.shape[0], inset : inset + alone.shape[1]]
                shares = disagreement(alone, inside)
                ratio = shares[0] / shares[-1] if shares[-1] else float("inf")
                cells = " ".join(f"{100 * s:>9.1f}%" for s in shares)
                seconds = time.perf_counter() - started
                print(
                    f"{scene:<8} {name:>10} {cells} {ratio:>8.2f} {scene_tiles:>11} {crop_tiles:>10} "
                    f"{seconds:>6.0f}",
                    flush=True,
                )
    print(f"\ntiles per scene (grid only), tile {card.tile_size}, overlap {card.overlap}:")
    for size in (1000, 2048, BIG):
        counts = []
        for margin in margins:
            m = default if margin is None else margin
            counts.append(TileGrid(size, size, card.tile_size, card.overlap, margin=m).num_tiles)
        cells = ", ".join(f"margin {name}: {n}" for name, n in zip(names, counts, strict=True))
        print(f"  {size}x{size}: {cells} ({counts[-1] / counts[0]:.3f}x)")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
