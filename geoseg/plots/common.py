"""What every picture shares: the lazy matplotlib import, class colours, and the atomic PNG writer."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.atomic import atomic_output
from geoseg.errors import ConfigurationError, GeosegError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100  # one figure unit = one PNG pixel at this density; layouts are computed in pixels

# Used for classes that neither the card nor the raster gives a colour (matplotlib's tab20, reordered so
# that neighbouring class indices get clearly different hues).
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)


def default_color(index: int) -> tuple[int, int, int]:
    """A palette colour for class ``index`` when nothing better is known."""
    return DEFAULT_PALETTE[int(index) % len(DEFAULT_PALETTE)]


def class_colors(count: int, colors: Sequence[Sequence[int]] | None = None) -> list[tuple[int, int, int]]:
    """``count`` RGB colours: the given ones first, the default palette for the rest."""
    known = [tuple(int(v) for v in c[:3]) for c in (colors or [])]
    return [known[i] if i < len(known) else default_color(i) for i in range(count)]  # type: ignore[misc]


def require_matplotlib() -> None:
    """Fail with one line saying how to install the plotting extra; call it before any long work starts."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise GeosegError(
            "drawing pictures needs matplotlib, which is not installed; install it with: "
            "pip install 'geoseg[plot]'"
        ) from error


def check_png_output(
    path: str | os.PathLike, overwrite: bool, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Before any work: matplotlib is there, the name ends in .png, and the file may be written."""
    from geoseg.atomic import check_output_path

    require_matplotlib()
    if Path(path).suffix.lower() != ".png":
        raise ConfigurationError(f"{path}: pictures are written as PNG; name the file .png")
    return check_output_path(path, overwrite, inputs)


def new_figure(width_px: int, height_px: int, **kwargs) -> Figure:
    """A figure on its own Agg canvas (no pyplot: no global state, no display needed on a server)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, **kwargs)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | os.PathLike, *, title: str, overwrite: bool = False) -> Path:
    """Write ``figure`` as a PNG atomically; the metadata holds ``title`` (a base name, never a full path)."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, metadata={"Title": title})
    return Path(path)


def save_rgba_png(
    pixels: np.ndarray, path: str | os.PathLike, *, title: str, overwrite: bool = False
) -> Path:
    """Write (rows, cols, 4) uint8 pixels as a PNG atomically, with ``title`` as its only text metadata."""
    from PIL import Image, PngImagePlugin  # matplotlib's own PNG writer

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", title)
    with atomic_output(path, overwrite=overwrite) as tmp:
        Image.fromarray(pixels, mode="RGBA").save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def base_name(path: str | os.PathLike) -> str:
    """The file's base name: what pictures may show of a path (no folders, which can be personal)."""
    return Path(str(path).rstrip("/")).name or str(path)
