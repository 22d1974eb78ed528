"""Make the README's pictures with geoseg itself: the bundled sample scene, its classes and its polygons.

    python docs/make_images.py            # from the repository root; a few minutes on a CPU

Runs ``geoseg predict`` (the bundled demonstration model), ``geoseg vectorize`` and ``geoseg quicklook`` as a
user would, in a work folder under ``build/``, then draws the scene and the polygons with matplotlib. The PNGs
go to ``docs/images/``, downsampled and palette-quantized so each stays well under 400 KB.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch, PathPatch
from matplotlib.path import Path as MplPath
from PIL import Image
from rasterio.enums import Resampling

from geoseg.raster.classes import read_classes

REPO = Path(__file__).resolve().parent.parent
SCENE = REPO / "sample_data" / "netherlands_0p25m_epsg28992.tif"
MODEL = REPO / "models" / "manet_r50_loveda_demo.safetensors"
IMAGES = REPO / "docs" / "images"
WORK = REPO / "build" / "docs-images"
SIZE = 640  # pixels across the scene in each picture


def geoseg(*args: str | Path) -> None:
    """Run one geoseg command as a user would (same interpreter, this checkout)."""
    words = [str(a.relative_to(REPO)) if isinstance(a, Path) else str(a) for a in args]
    print("$ geoseg", " ".join(words), flush=True)
    command = [sys.executable, "-m", "geoseg.cli.main", *words]
    subprocess.run(command, check=True, cwd=REPO)


def read_scene(size: int) -> np.ndarray:
    """The scene's first three bands, averaged down to ``size`` pixels across, as H×W×3 uint8."""
    with rasterio.open(SCENE) as src:
        height = round(src.height * size / src.width)
        pixels = src.read([1, 2, 3], out_shape=(3, height, size), resampling=Resampling.average)
    return np.moveaxis(pixels, 0, -1)


def save_small_png(rgb: np.ndarray, path: Path, keep: Sequence[Sequence[int]] = ()) -> None:
    """Write an RGB(A) array as a 256-colour palette PNG (a photo as plain RGB PNG would be ~1 MB). The
    colours in ``keep`` (the classes') get palette entries of their own, so legend swatches stay exactly the
    class colours: an adaptive palette alone turned the small red swatch of "building" brown."""
    rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3])
    kept = [tuple(int(v) for v in color) for color in dict.fromkeys(tuple(c) for c in keep)]
    adaptive = Image.fromarray(rgb).quantize(
        colors=256 - len(kept), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    indexes = np.asarray(adaptive).copy()
    palette = adaptive.getpalette()[: 3 * (256 - len(kept))]
    palette += [0] * (3 * (256 - len(kept)) - len(palette))
    for offset, color in enumerate(kept):
        indexes[np.all(rgb == color, axis=-1)] = 256 - len(kept) + offset
        palette += list(color)
    image = Image.fromarray(indexes, mode="P")
    image.putpalette(palette)
    image.save(path, optimize=True)
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size // 1024} KB)")


def figure_to_array(figure: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def draw_polygons(polygons: Path, classes: Path, path: Path) -> None:
    """The polygons over the scene, filled and outlined in their class colours, with a legend."""
    with rasterio.open(classes) as src:
        infos = read_classes(src)
        bounds = src.bounds
    colors = {info.name: np.array(info.color) / 255 for info in infos}
    meta, _, geometries, field_data = pyogrio.raw.read(polygons, layer=polygons.name.removesuffix(".gpkg"))
    names = field_data[list(meta["fields"]).index("class_name")]
    shapes = shapely.from_wkb(geometries)

    dpi = 100
    legend_px = 190
    figure = Figure(figsize=((SIZE + legend_px) / dpi, SIZE / dpi), dpi=dpi)
    figure.patch.set_facecolor("white")
    axes = figure.add_axes((0, 0, SIZE / (SIZE + legend_px), 1))
    axes.imshow(read_scene(SIZE), extent=(bounds.left, bounds.right, bounds.bottom, bounds.top))
    patches, facecolors = [], []
    for name, shape in zip(names, shapes, strict=True):
        for part in getattr(shape, "geoms", [shape]):
            rings = [part.exterior, *part.interiors]
            vertices = np.concatenate([np.asarray(ring.coords) for ring in rings])
            codes = np.concatenate(
                [
                    [MplPath.MOVETO] + [MplPath.LINETO] * (len(ring.coords) - 2) + [MplPath.CLOSEPOLY]
                    for ring in rings
                ]
            )
            patches.append(PathPatch(MplPath(vertices, codes)))
            facecolors.append(colors[name])
    collection = PatchCollection(patches, facecolors=facecolors, edgecolors="black", linewidths=0.4)
    collection.set_alpha(0.45)
    axes.add_collection(collection)
    outline = PatchCollection(
        [PathPatch(p.get_path()) for p in patches], facecolors="none", edgecolors=facecolors, linewidths=1.0
    )
    axes.add_collection(outline)
    axes.set_xlim(bounds.left, bounds.right)
    axes.set_ylim(bounds.bottom, bounds.top)
    axes.set_axis_off()
    present = sorted(set(names), key=[info.name for info in infos].index)
    figure.legend(
        handles=[Patch(facecolor=colors[n], edgecolor="black", label=n) for n in present],
        loc="upper right",
        title=f"{len(shapes)} polygons",
        frameon=False,
        fontsize=10,
    )
    save_small_png(figure_to_array(figure), path, keep=[info.color for info in infos])


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    classes = WORK / "netherlands.classes.tif"
    polygons = WORK / "netherlands.polygons.gpkg"
    geoseg("predict", SCENE, "-o", classes, "-m", MODEL, "--quiet")
    geoseg("vectorize", classes, "-o", polygons, "--min-area", 2, "--quiet")
    geoseg("quicklook", classes, "-o", WORK / "classes.png", "--over", SCENE, "--max-size", 900)

    save_small_png(read_scene(SIZE), IMAGES / "scene.png")
    with rasterio.open(classes) as src:
        class_colors = [info.color for info in read_classes(src)]
    classes_png = np.asarray(Image.open(WORK / "classes.png").convert("RGB"))
    save_small_png(classes_png, IMAGES / "classes.png", keep=class_colors)
    draw_polygons(polygons, classes, IMAGES / "polygons.png")


if __name__ == "__main__":
    main()
