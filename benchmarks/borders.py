"""Edge effect at a scene's border: a crop predicted alone vs the same pixels predicted with real context.

A pixel on the border of a scene sits on the edge of its tile, where the network sees least; inside the
larger scene the same pixel has context on every side. For each scene and each inset in ``--insets``, a crop
(inset px in from every side) is written as a GeoTIFF of its own and predicted alone, and the scene is
predicted whole, both with the bundled model and the same border margin (0: no border context; ``auto``:
the default, :func:`geoseg.inference.plan.border_margin`, which mirrors the crop's own pixels). The table
gives the share of crop pixels whose class differs, by distance d (px) from the crop's border: the outer ring
(d = 0), 1-3, 4-15 and the interior (d >= 16), from differing and valid pixels summed over all insets.

The interior figure is the tile grid's shift between crop and scene, which swings several-fold with the
inset, hence the sum over several. Two more rows per margin m > 0 separate the two causes: the crop widened
by m px of *real* scene pixels (insets >= m) and predicted with margin 0, its central part cut out, has the
same tile grid as the mirrored crop and the same context as the scene. Against the scene it shows the grid
shift alone; against the mirrored crop, the edge effect alone (mirrored vs real context).

Target (scenes in the model's domain, summed figures): outer ring <= 1.5 x interior. The ratio reads 'n/a'
where the interior is under 2 % (a ratio of two tiny figures says nothing); the excess, outer - interior in
percentage points, is printed always. It also prints the tiles each margin costs.

    PYTHONPATH=. python benchmarks/borders.py        # sample scene + two real scenes, margin 0 and auto
    PYTHONPATH=. python benchmarks/borders.py --margins 0,64 --scenes sample,naip --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
import torch
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from geoseg.inference.grid import TileGrid
from geoseg.inference.plan import border_margin
from geoseg.inference.scene import predict_scene
from geoseg.model.loading import load_model

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


class Scene(NamedTuple):
    file: Path
    window: tuple[int, int, int, int] | None  # (col_off, row_off, width, height); None: the whole file
    bands: list[int] | None  # the bands fed to the model; None: the card's default
    in_domain: bool  # False: reported, not held to the target


SCENES = {
    "sample": Scene(REPO / "sample_data" / "netherlands_0p25m_epsg28992.tif", None, None, True),
    "brazil": Scene(DATA / "aerial" / "brazil_oam_0p10m_epsg3395.tif", (524, 524, 1000, 1000), None, True),
    # 5 m farmland under a model trained on 0.3 m LoveDA: outside its domain
    "naip": Scene(DATA / "variants" / "naip_rgbn_5m_nodata0.tif", None, [1, 2, 3], False),
}
RINGS = (("outer ring", 0, 1), ("1-3 px", 1, 4), ("4-15 px", 4, 16), ("interior", 16, None))
MIN_INTERIOR = 0.02  # below it the outer/interior ratio is not printed
TARGET = 1.5
BIG = 10_000  # the side of a big scene whose tile counts are printed too


def write_window(source: Path, window: Window, target: Path) -> None:
    """``window`` of ``source`` as a GeoTIFF of its own, georeferenced where it lies, its bands meaning
    what they meant: the source's colour interpretation is kept (GDAL would take a 4th band for alpha)."""
    with rasterio.open(source) as src:
        rgb = src.colorinterp[:3] == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        profile = src.profile.copy()
        profile.update(
            driver="GTiff",
            width=int(window.width),
            height=int(window.height),
            transform=src.window_transform(window),
            tiled=False,
            compress="deflate",
            photometric="RGB" if rgb else "MINISBLACK",
        )
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(target, "w", **profile) as dst:
            dst.colorinterp = src.colorinterp
            dst.write(src.read(window=window))
            mask = src.dataset_mask(window=window)
            if (mask == 0).any() and src.nodata is None:
                dst.write_mask(mask)


def ring_distance(height: int, width: int) -> np.ndarray:
    """Each pixel's distance (px) from the nearest border of a ``height`` x ``width`` raster."""
    rows = np.minimum(np.arange(height), np.arange(height)[::-1])
    cols = np.minimum(np.arange(width), np.arange(width)[::-1])
    return np.minimum(rows[:, None], cols[None, :])


def disagreement(crop: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per ring, the crop's pixels whose class differs from ``other``'s and the pixels valid in both
    (``len(RINGS)`` x 2 counts, to be summed over crops before any share is taken)."""
    distance = ring_distance(*crop.shape)
    valid = (crop != 255) & (other != 255)
    counts = np.zeros((len(RINGS), 2), dtype=np.int64)
    for i, (_, lo, hi) in enumerate(RINGS):
        ring = valid & (distance >= lo) & (distance < (hi if hi is not None else np.inf))
        counts[i] = (int((crop[ring] != other[ring]).sum()), int(ring.sum()))
    return counts


@dataclass
class Tally:
    """Counts of one comparison summed over the crops: ``disagreement`` counts, crops and their tiles."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros((len(RINGS), 2), dtype=np.int64))
    crops: int = 0
    tiles: int = 0

    def add(self, counts: np.ndarray, tiles: int) -> None:
        self.counts += counts
        self.crops += 1
        self.tiles += tiles


def verdict(counts: np.ndarray) -> tuple[list[float], str, str, bool | None]:
    """Shares per ring, the outer/interior ratio ('n/a' under MIN_INTERIOR), the excess in percentage points
    and whether the target holds (None where the ratio is not taken)."""
    shares = [int(d) / int(v) if v else float("nan") for d, v in counts]
    outer, interior = shares[0], shares[-1]
    excess = f"{100 * (outer - interior):+.1f}"
    if not interior >= MIN_INTERIOR:
        return shares, "n/a", excess, None
    return shares, f"{outer / interior:.2f}", excess, outer <= TARGET * interior


def predict(model, card, path: Path, out: Path, margin: int | None, scene: Scene, precision: str):
    """The class raster of ``path`` and the tiles it took."""
    result = predict_scene(
        model,
        card,
        path,
        out,
        margin=margin,
        bands=scene.bands,
        device="cpu",
        precision=precision,
        overwrite=True,
    )
    with rasterio.open(out) as dataset:
        return dataset.read(1), result.tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default=",".join(SCENES), help=f"comma-separated, of {', '.join(SCENES)}")
    parser.add_argument("--margins", default="0,auto", help="border margins in px (auto: the default)")
    parser.add_argument(
        "--insets", default="40,70,100,130,160", help="px between each crop and the scene's border"
    )
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, card = load_model(None, None, None)
    default = border_margin(card.tile_size, card.overlap)
    margins = [None if m == "auto" else int(m) for m in args.margins.split(",")]
    names = [f"{default} (auto)" if m is None else str(m) for m in margins]
    insets = [int(i) for i in args.insets.split(",")]
    print(
        f"model tile {card.tile_size}, overlap {card.overlap}; crop insets {args.insets} px (summed); "
        f"precision {args.precision}; torch threads {torch.get_num_threads()}; "
        f"target: outer <= {TARGET} x interior, ratio n/a where the interior < {100 * MIN_INTERIOR:.0f} %"
    )
    header = f"{'scene':<7} {'margin':>8} {'crop vs':<13} " + " ".join(f"{name:>10}" for name, _, _ in RINGS)
    print(
        f"{header} {'ratio':>6} {'excs pp':>7} {'target':>8} {'crops':>5} {'tiles':>5} {'scene':>5} {'s':>5}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out = folder / "out.tif"
        for scene_name in args.scenes.split(","):
            scene = SCENES[scene_name]
            window = scene.window
            if window is None:
                with rasterio.open(scene.file) as src:
                    window = (0, 0, src.width, src.height)
            full = folder / f"{scene_name}.tif"
            write_window(scene.file, Window(*window), full)
            for margin, name in zip(margins, names, strict=True):
                m = default if margin is None else margin
                started = time.perf_counter()
                whole, tiles = predict(model, card, full, out, margin, scene, args.precision)
                rows = {"mirror: scene": Tally()}
                if m > 0:
                    rows.update({"real: scene": Tally(), "real: mirror": Tally()})
                for inset in insets:
                    h, w = window[3] - 2 * inset, window[2] - 2 * inset
                    crop = folder / "crop.tif"
                    write_window(full, Window(inset, inset, w, h), crop)
                    alone, crop_tiles = predict(model, card, crop, out, margin, scene, args.precision)
                    inside = whole[inset : inset + h, inset : inset + w]
                    rows["mirror: scene"].add(disagreement(alone, inside), crop_tiles)
                    if m == 0 or inset < m:
                        continue
                    write_window(full, Window(inset - m, inset - m, w + 2 * m, h + 2 * m), crop)
                    wide, wide_tiles = predict(model, card, crop, out, 0, scene, args.precision)
                    real = wide[m : m + h, m : m + w]
                    rows["real: scene"].add(disagreement(real, inside), wide_tiles)
                    rows["real: mirror"].add(disagreement(real, alone), wide_tiles)
                seconds = time.perf_counter() - started
                for key, tally in rows.items():
                    shares, ratio, excess, met = verdict(tally.counts)
                    target, scene_tiles, took = "-", "", ""
                    if key == "mirror: scene":
                        target = "n/a" if met is None else ("met" if met else "missed")
                        target = target if scene.in_domain else "(domain)"
                        scene_tiles, took = str(tiles), f"{seconds:.0f}"
                    cells = " ".join(f"{100 * s:>9.1f}%" for s in shares)
                    print(
                        f"{scene_name:<7} {name:>8} {key:<13} {cells} {ratio:>6} {excess:>7} {target:>8} "
                        f"{tally.crops:>5} {tally.tiles:>5} {scene_tiles:>5} {took:>5}",
                        flush=True,
                    )
    print(
        "\ncrop vs — mirror: the crop predicted alone at the margin; scene: its pixels inside the scene "
        "(same margin);\nreal: the crop widened by the margin of real scene pixels, predicted with margin 0: "
        "against the scene the grid shift alone, against mirror the edge effect alone.\nexcs pp: outer - "
        "interior in percentage points; tiles: the crops' (summed), scene: the scene's; "
        "(domain): outside the model's domain, reported, not held to the target."
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
