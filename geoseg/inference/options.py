"""``PredictOptions``: every option of a prediction as one typed, frozen value, checked once where it is made.

The CLI builds it from its flags, the Python API from keywords; it then travels unchanged through the layers
(batch -> scene -> regions) and is what the work folder's manifest records. Checks that need the model (the
tile against the architecture's input multiple) happen in :func:`~geoseg.inference.plan.plan_scene`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from geoseg.errors import ConfigurationError
from geoseg.inference.acceleration import check_batch_size
from geoseg.inference.grid import DEFAULT_CHUNK
from geoseg.raster.reading import Scale
from geoseg.raster.writing import DEFAULT_CODEC, check_codec

TTA_MODES = ("none", "flip", "d4")


def path_list(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """One path or several, as a list of strings: ``predict("scene.tif", ...)`` means one scene, not one
    per character of its name (a string is a sequence too)."""
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(path) for path in paths]


@dataclass(frozen=True)
class PredictOptions:
    """How to predict: tiling, batching, device, outputs, runs. ``None`` tile/overlap: the card's;
    ``margin`` None: :func:`~geoseg.inference.plan.border_margin`, 0: no border context."""

    tile: int | None = None
    overlap: int | None = None
    margin: int | None = None
    batch_size: int | str = "auto"
    device: str | torch.device = "auto"
    precision: str = "auto"
    engine: str = "auto"
    calibration: str | os.PathLike | Sequence[str | os.PathLike] | None = None
    compile: bool = False
    tta: str = "none"
    bands: list[int] | None = None
    scale: Scale = None
    confidence: bool = False
    probabilities: bool = False
    vectorize: str | os.PathLike | None = None
    quicklook: bool = False
    compress: str = DEFAULT_CODEC
    styles: bool = True
    overwrite: bool = False
    keep_going: bool = False
    skip_existing: bool = False
    assets: list[str] | None = None
    chunk_size: int = DEFAULT_CHUNK
    workers: int | str = 1
    scheduler: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.calibration, (str, os.PathLike)):  # one raster or folder, not its characters
            object.__setattr__(self, "calibration", path_list(self.calibration))
        if self.calibration and str(self.precision).lower() != "int8":
            paths = [str(path) for path in self.calibration]
            given = paths[0] if len(paths) == 1 else paths
            raise ConfigurationError(
                f"calibration={given!r} is for precision='int8' only; drop it or pass precision='int8'"
            )
        if self.tta not in TTA_MODES:
            raise ConfigurationError(f"unknown test-time augmentation {self.tta!r}; use none, flip or d4")
        object.__setattr__(self, "batch_size", check_batch_size(self.batch_size))
        # a codec this GDAL lacks fails now, not at the first finished scene
        object.__setattr__(self, "compress", check_codec(self.compress))

    def planning(self) -> dict[str, Any]:
        """The keywords of :func:`~geoseg.inference.plan.plan_scene`."""
        return {
            "tile": self.tile,
            "overlap": self.overlap,
            "margin": self.margin,
            "bands": self.bands,
            "scale": self.scale,
            "chunk_size": self.chunk_size,
        }
